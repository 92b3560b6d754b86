"""The runs table in the bot's SQLite store: every run seen (rig, pid, start time), whether it
is still running, and its summary once it ended; times are UTC seconds since the epoch."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from alert_bot.store import Database, NewNotification, Store
from alert_bot.store.database import record_from_row


@dataclass
class Run:
    instance: str
    pid: int
    start_time: float
    rig: str
    run_name: str
    process: str
    user: str
    container: str
    cards: dict[str, dict] = field(default_factory=dict)  # uuid -> {"gpu": "0", "name": ...}
    first_seen: float = 0.0
    last_seen: float = 0.0
    status: str = "running"
    ended_at: float | None = None
    summary: dict | None = None

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.instance, self.pid, self.start_time)

    def labels(self) -> dict[str, str]:
        """What routes match a run's messages against, like an alert's labels."""
        return {
            "rig": self.rig,
            "instance": self.instance,
            "pid": str(self.pid),
            "run": self.run_name,
            "process": self.process,
            "user": self.user,
            "container": self.container,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        return record_from_row(cls, row, json_columns=("cards", "summary"))


class RunTable:
    """Runs over the store's database; an ended run and its message commit together."""

    def __init__(self, store: Store):
        self.store = store
        self.database: Database = store.database

    def running(self) -> list[Run]:
        rows = self.database.query("SELECT * FROM runs WHERE status = 'running' ORDER BY rig")
        return [Run.from_row(row) for row in rows]

    def ended_since(self, moment: float) -> list[Run]:
        rows = self.database.query(
            "SELECT * FROM runs WHERE status = 'ended' AND ended_at >= ? AND summary IS NOT NULL"
            " ORDER BY ended_at",
            (moment,),
        )
        return [Run.from_row(row) for row in rows]

    def begin(self, run: Run, notice: list[NewNotification], now: float) -> bool:
        """Record a run seen for the first time (and its start message); False if known."""
        with self.database.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs (instance, pid, start_time, rig, run_name, process,"
                " user, container, cards, first_seen, last_seen, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (
                    run.instance,
                    run.pid,
                    run.start_time,
                    run.rig,
                    run.run_name,
                    run.process,
                    run.user,
                    run.container,
                    json.dumps(run.cards),
                    now,
                    now,
                ),
            )
            if cursor.rowcount != 1:
                return False
            self.store.outbox.insert(db, notice, now)  # in this transaction
        return True

    def seen(self, runs: list[Run], now: float) -> None:
        """Still running now, on these cards (one transaction, one fsync, for all of them)."""
        if not runs:
            return
        with self.database.transaction() as db:
            db.executemany(
                "UPDATE runs SET last_seen = ?, cards = ? WHERE instance = ? AND pid = ?"
                " AND start_time = ? AND status = 'running'",
                [(now, json.dumps(run.cards), *run.key) for run in runs],
            )

    def end(
        self,
        run: Run,
        ended_at: float,
        summary: dict | None,
        notice: list[NewNotification],
        now: float,
    ) -> bool:
        """Mark the run ended and queue its message in one transaction: a crash before the
        commit leaves it running (looked at again), after it the outbox delivers it once."""
        with self.database.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET status = 'ended', ended_at = ?, summary = ? WHERE instance = ?"
                " AND pid = ? AND start_time = ? AND status = 'running'",
                (ended_at, json.dumps(summary) if summary else None, *run.key),
            )
            if cursor.rowcount != 1:
                return False
            self.store.outbox.insert(db, notice, now)  # in this transaction
        return True

    def queue_once(self, key: str, value: str, notices: list[NewNotification], now: float) -> bool:
        """Queue notices unless the state key already holds value (set in the same
        transaction): the daily digest goes out once per day, restarts included."""
        with self.database.transaction() as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            if row is not None and row["value"] == value:
                return False
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
            self.store.outbox.insert(db, notices, now)  # in this transaction
        return True

    def forget_before(self, moment: float) -> None:
        with self.database.transaction() as db:
            db.execute("DELETE FROM runs WHERE status = 'ended' AND ended_at < ?", (moment,))
