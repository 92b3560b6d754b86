"""The bot's durable store: an SQLite outbox of notifications and everything that must survive a
restart (dedupe keys, silence-button matchers, chat migrations, dead letters, small state).

WAL with synchronous=FULL: the webhook answers 2xx only after commit, and Alertmanager never
retries a 2xx, so a commit must survive power loss, not only a process crash. In WAL mode FULL
costs one fsync of the log per commit (no fsync of the main file), which is cheap enough for
alert traffic; NORMAL would be safe against crashes but could drop the last commits on power loss.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    chat_id INTEGER NOT NULL,
    thread_id INTEGER,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedupe_key TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    alerts_done INTEGER NOT NULL DEFAULT 0,
    parts_done INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_by_status ON notifications (status, chat_id, id);
CREATE TABLE IF NOT EXISTS dedupe (
    key TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS silence_buttons (
    short_id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_migrations (
    old_chat_id INTEGER PRIMARY KEY,
    new_chat_id INTEGER NOT NULL,
    migrated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


PENDING_BYTES = 8 * 1024 * 1024  # payload read per delivery step at most (one always)


class StoreError(RuntimeError):
    """The store could not read or write; the caller must not report success."""


@dataclass(frozen=True)
class NewNotification:
    chat_id: int
    thread_id: int | None
    kind: str  # "alerts" (an Alertmanager group for one chat) or "notice" (the bot's own text)
    payload: dict


@dataclass(frozen=True)
class PendingNotification:
    id: int
    created_at: float
    chat_id: int
    thread_id: int | None
    kind: str
    payload: dict
    attempts: int
    alerts_done: int
    parts_done: int


class Store:
    """Thread-safe access to the SQLite file; one connection guarded by a lock."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0):
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise StoreError(f"store write failed: {exc}") from None

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None

    # --- the outbox -------------------------------------------------------------------------

    def add(
        self,
        notifications: list[NewNotification],
        now: float,
        dedupe_key: str | None = None,
        dedupe_window: float = 0.0,
    ) -> bool:
        """Store notifications in one transaction; False (and nothing stored) for a duplicate."""
        with self._transaction() as db:
            if dedupe_key is not None:
                row = db.execute(
                    "SELECT seen_at FROM dedupe WHERE key = ?", (dedupe_key,)
                ).fetchone()
                if row is not None and now - row[0] < dedupe_window:
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO dedupe (key, seen_at) VALUES (?, ?)", (dedupe_key, now)
                )
            for item in notifications:
                db.execute(
                    "INSERT INTO notifications (created_at, chat_id, thread_id, kind, payload,"
                    " dedupe_key, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        self._resolve_chat(db, item.chat_id),
                        item.thread_id,
                        item.kind,
                        json.dumps(item.payload, ensure_ascii=False),
                        dedupe_key,
                        now,
                    ),
                )
        return True

    def due_chats(self, now: float) -> list[int]:
        rows = self._query(
            "SELECT chat_id, MIN(id) FROM notifications WHERE status = 'pending'"
            " AND next_attempt_at <= ? GROUP BY chat_id ORDER BY 2",
            (now,),
        )
        return [row[0] for row in rows]

    def next_due_at(self) -> float | None:
        rows = self._query(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'"
        )
        return rows[0][0]

    def pending_for_chat(
        self, chat_id: int, limit: int, max_bytes: int = PENDING_BYTES
    ) -> list[PendingNotification]:
        """The chat's pending notifications, oldest first: at most limit of them, and no more
        than max_bytes of payload (always the first), so a backlog of large notifications
        (up to the webhook's body limit each) is never loaded whole."""
        sizes = self._query(
            "SELECT id, length(payload) FROM notifications WHERE status = 'pending'"
            " AND chat_id = ? ORDER BY id LIMIT ?",
            (chat_id, limit),
        )
        total, last_id = 0, None
        for notification_id, size in sizes:
            if last_id is not None and total + size > max_bytes:
                break
            total, last_id = total + size, notification_id
        if last_id is None:
            return []
        rows = self._query(
            "SELECT id, created_at, chat_id, thread_id, kind, payload, attempts, alerts_done,"
            " parts_done FROM notifications WHERE status = 'pending' AND chat_id = ?"
            " AND id <= ? ORDER BY id",
            (chat_id, last_id),
        )
        return [
            PendingNotification(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])
            for r in rows
        ]

    def record_progress(self, progress: dict[int, tuple[int, int, bool]], now: float) -> None:
        """After Telegram accepted a message: per notification id, (alerts done, parts of the
        next alert done, finished)."""
        with self._transaction() as db:
            for notification_id, (alerts_done, parts_done, finished) in progress.items():
                if finished:
                    db.execute(
                        "UPDATE notifications SET status = 'sent', sent_at = ?, alerts_done = ?,"
                        " last_error = NULL WHERE id = ? AND status = 'pending'",
                        (now, alerts_done, notification_id),
                    )
                else:
                    db.execute(
                        "UPDATE notifications SET alerts_done = ?, parts_done = ? WHERE id = ?",
                        (alerts_done, parts_done, notification_id),
                    )

    def defer(self, ids: Iterable[int], next_attempt_at: float, error: str) -> None:
        """A failed attempt: try these again later."""
        with self._transaction() as db:
            for notification_id in ids:
                db.execute(
                    "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?,"
                    " last_error = ? WHERE id = ? AND status = 'pending'",
                    (next_attempt_at, error[:500], notification_id),
                )

    def dead_letter(self, ids: Iterable[int], text: str, error: str, now: float) -> int:
        """Give up on notifications: mark them dead and keep what could not be sent."""
        moved = 0
        with self._transaction() as db:
            for notification_id in ids:
                row = db.execute(
                    "SELECT chat_id FROM notifications WHERE id = ? AND status = 'pending'",
                    (notification_id,),
                ).fetchone()
                if row is None:
                    continue
                db.execute(
                    "UPDATE notifications SET status = 'dead', last_error = ?, attempts ="
                    " attempts + 1 WHERE id = ?",
                    (error[:500], notification_id),
                )
                db.execute(
                    "INSERT INTO dead_letters (notification_id, chat_id, text, error, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (notification_id, row[0], text, error[:500], now),
                )
                moved += 1
        return moved

    def dead_letters(self) -> list[dict]:
        rows = self._query(
            "SELECT notification_id, chat_id, text, error, created_at FROM dead_letters ORDER BY id"
        )
        keys = ("notification_id", "chat_id", "text", "error", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def queue_stats(self, now: float) -> tuple[int, float]:
        """(pending notifications, age in seconds of the oldest one or 0)."""
        rows = self._query(
            "SELECT COUNT(*), MIN(created_at) FROM notifications WHERE status = 'pending'"
        )
        count, oldest = rows[0]
        return count, (max(0.0, now - oldest) if oldest is not None else 0.0)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._query("SELECT COUNT(*) FROM notifications")[0][0]
        return self._query("SELECT COUNT(*) FROM notifications WHERE status = ?", (status,))[0][0]

    def prune(
        self,
        now: float,
        dedupe_window: float,
        keep_sent_seconds: float = 7 * 86400,
        keep_buttons_seconds: float = 30 * 86400,
    ) -> None:
        """Forget dedupe keys past their window, delivered notifications older than a week,
        and silence buttons not offered for a month (a press then says the button expired)."""
        with self._transaction() as db:
            db.execute("DELETE FROM dedupe WHERE seen_at < ?", (now - dedupe_window,))
            db.execute(
                "DELETE FROM notifications WHERE status = 'sent' AND sent_at < ?",
                (now - keep_sent_seconds,),
            )
            db.execute(
                "DELETE FROM silence_buttons WHERE created_at < ?", (now - keep_buttons_seconds,)
            )

    # --- chats that moved -------------------------------------------------------------------

    @staticmethod
    def _resolve_chat(db: sqlite3.Connection, chat_id: int) -> int:
        seen = set()
        while chat_id not in seen:
            seen.add(chat_id)
            row = db.execute(
                "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = ?", (chat_id,)
            ).fetchone()
            if row is None:
                break
            chat_id = row[0]
        return chat_id

    def resolve_chat(self, chat_id: int) -> int:
        with self._lock:
            try:
                return self._resolve_chat(self._db, chat_id)
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None

    def former_chat_ids(self, chat_id: int) -> list[int]:
        """The ids this chat had before it was upgraded (possibly more than once)."""
        former: list[int] = []
        frontier = [chat_id]
        while frontier and len(former) < 100:
            rows = self._query(
                "SELECT old_chat_id FROM chat_migrations WHERE new_chat_id = ?", (frontier.pop(),)
            )
            for (old,) in rows:
                if old != chat_id and old not in former:
                    former.append(old)
                    frontier.append(old)
        return former

    def migrate_chat(self, old_chat_id: int, new_chat_id: int, now: float) -> None:
        """A group became a supergroup: remember it and move what waits for the old id."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO chat_migrations (old_chat_id, new_chat_id, migrated_at)"
                " VALUES (?, ?, ?)",
                (old_chat_id, new_chat_id, now),
            )
            db.execute(
                "UPDATE notifications SET chat_id = ? WHERE chat_id = ? AND status = 'pending'",
                (new_chat_id, old_chat_id),
            )

    # --- silence buttons and small state ----------------------------------------------------

    def save_silence_target(self, matchers: list[dict], description: str, now: float) -> str:
        """Keep matchers under a short id that fits in a button's 64-byte callback data."""
        encoded = json.dumps(matchers, sort_keys=True, ensure_ascii=False)
        with self._transaction() as db:
            row = db.execute(
                "SELECT short_id FROM silence_buttons WHERE matchers = ?", (encoded,)
            ).fetchone()
            if row is not None:
                # Offered again: the button's age counts from now, so pruning spares it.
                db.execute(
                    "UPDATE silence_buttons SET created_at = ? WHERE short_id = ?", (now, row[0])
                )
                return row[0]
            short_id = secrets.token_urlsafe(6)
            db.execute(
                "INSERT INTO silence_buttons (short_id, matchers, description, created_at)"
                " VALUES (?, ?, ?, ?)",
                (short_id, encoded, description, now),
            )
            return short_id

    def silence_target(self, short_id: str) -> tuple[list[dict], str] | None:
        rows = self._query(
            "SELECT matchers, description FROM silence_buttons WHERE short_id = ?", (short_id,)
        )
        if not rows:
            return None
        return json.loads(rows[0][0]), rows[0][1]

    def get_state(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_state(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
