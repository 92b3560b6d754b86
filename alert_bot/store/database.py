"""The SQLite file under the store: one connection guarded by one lock, its schema brought up to
date on open (store/schema.py), and the transaction and query helpers every table uses (rows
come back as sqlite3.Row, read by name).

WAL with synchronous=FULL: the webhook answers 2xx only after commit, and Alertmanager never
retries a 2xx, so a commit must survive power loss, not only a process crash. In WAL mode FULL
costs one fsync of the log per commit (no fsync of the main file), which is cheap enough for
alert traffic; NORMAL would be safe against crashes but could drop the last commits on power loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from alert_bot.store.schema import NewerSchema, migrate

Record = TypeVar("Record")


def record_from_row(
    cls: type[Record], row: sqlite3.Row, json_columns: Iterable[str] = ()
) -> Record:
    """The dataclass cls from the row's columns named as its fields (each one must be there);
    the json_columns hold JSON text and are decoded, an empty one (NULL) read as None."""
    decoded = set(json_columns)
    values = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = row[item.name]
        if item.name in decoded:
            value = json.loads(value) if value else None
        values[item.name] = value
    return cls(**values)


class StoreError(RuntimeError):
    """The store could not read or write; the caller must not report success."""


class Database:
    """Thread-safe access to the SQLite file; one connection guarded by a lock."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0):
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            fresh = not self._connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
            found, now = migrate(self._connection)
            self._identity = self._stat_files()
        except (sqlite3.Error, OSError, NewerSchema) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None
        # The version an existing file was upgraded from, for the start-up log line (None for
        # a new file or one already current).
        self.upgraded_from = found if found != now and not fresh else None
        self._lock = threading.Lock()
        self.write_failed = False  # the last write transaction failed (disk full, file gone...)

    def _stat_files(self) -> tuple[tuple[int, int] | None, ...]:
        if self.path == ":memory:":
            return ()
        identity = []
        for name in (self.path, self.path + "-wal"):
            try:
                st = os.stat(name)
                identity.append((st.st_dev, st.st_ino))
            except FileNotFoundError:
                identity.append(None)
        return tuple(identity)

    def _check_identity(self) -> None:
        """StoreError unless the path still names the files this connection writes to."""
        try:
            now = self._stat_files()
        except OSError as exc:
            raise StoreError(f"store file unreadable: {exc}") from None
        if now == self._identity:
            return
        if now and self._identity and now[0] == self._identity[0] and self._identity[1] is None:
            self._identity = now  # the write-ahead log appeared with the first write
            return
        raise StoreError(f"store file {self.path} was deleted or replaced while open")

    def check(self) -> None:
        """StoreError if the file is gone or replaced (for health checks)."""
        with self._lock:
            self._check_identity()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); any failure is a StoreError."""
        db = self._connection
        with self._lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    self._check_identity()
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                self.write_failed = False
            except StoreError:
                self.write_failed = True
                raise
            except sqlite3.Error as exc:
                self.write_failed = True
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise StoreError(f"store write failed: {exc}") from None

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._connection.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a few reads under the lock (no transaction)."""
        with self._lock:
            try:
                yield self._connection
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None
