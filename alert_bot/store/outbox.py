"""The outbox: notifications waiting for Telegram, oldest first per chat, each marked sent only
after Telegram accepted it, or dead (with what could not be sent kept in dead_letters)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from alert_bot.store.database import Database, record_from_row
from alert_bot.store.tables import ChatMigrations, DedupeKeys

PENDING_BYTES = 8 * 1024 * 1024  # payload read per delivery step at most (one always)


@dataclass(frozen=True)
class NewNotification:
    chat_id: int
    thread_id: int | None
    # "alerts" (an Alertmanager group for one chat), "notice" (the bot's own text) or "edit"
    # (a new text for a message already sent: {"message_id", "text", "html"})
    kind: str
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
    next_attempt_at: float = 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PendingNotification:
        return record_from_row(cls, row, json_columns=("payload",))


class Outbox:
    def __init__(self, database: Database, dedupe: DedupeKeys, migrations: ChatMigrations):
        self.database = database
        self.dedupe = dedupe
        self.migrations = migrations

    def add(
        self,
        notifications: list[NewNotification],
        now: float,
        dedupe_key: str | None = None,
        dedupe_window: float = 0.0,
    ) -> bool:
        """Store notifications in one transaction; False (and nothing stored) for a duplicate."""
        with self.database.transaction() as db:
            if dedupe_key is not None and self.dedupe.seen_within(
                db, dedupe_key, now, dedupe_window
            ):
                return False
            self.insert(db, notifications, now, dedupe_key)
        return True

    def insert(
        self,
        db: sqlite3.Connection,
        notifications: list[NewNotification],
        now: float,
        dedupe_key: str | None = None,
    ) -> None:
        """Store notifications within the caller's transaction."""
        for item in notifications:
            db.execute(
                "INSERT INTO notifications (created_at, chat_id, thread_id, kind, payload,"
                " dedupe_key, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    self.migrations.follow(db, item.chat_id),
                    item.thread_id,
                    item.kind,
                    json.dumps(item.payload, ensure_ascii=False),
                    dedupe_key,
                    now,
                ),
            )

    def due_chats(self, now: float) -> list[int]:
        """Chats with a notification due now, the one waiting longest first."""
        rows = self.database.query(
            "SELECT chat_id, MIN(id) AS first_id FROM notifications WHERE status = 'pending'"
            " AND next_attempt_at <= ? GROUP BY chat_id ORDER BY first_id",
            (now,),
        )
        return [row["chat_id"] for row in rows]

    def next_due_at(self) -> float | None:
        rows = self.database.query(
            "SELECT MIN(next_attempt_at) AS due FROM notifications WHERE status = 'pending'"
        )
        return rows[0]["due"]

    def pending_for_chat(
        self, chat_id: int, limit: int, max_bytes: int = PENDING_BYTES
    ) -> list[PendingNotification]:
        """The chat's pending notifications, oldest first: at most limit of them, and no more
        than max_bytes of payload (always the first), so a backlog of large notifications
        (up to the webhook's body limit each) is never loaded whole."""
        sizes = self.database.query(
            "SELECT id, length(payload) AS size FROM notifications WHERE status = 'pending'"
            " AND chat_id = ? ORDER BY id LIMIT ?",
            (chat_id, limit),
        )
        total, last_id = 0, None
        for row in sizes:
            if last_id is not None and total + row["size"] > max_bytes:
                break
            total, last_id = total + row["size"], row["id"]
        if last_id is None:
            return []
        rows = self.database.query(
            "SELECT id, created_at, chat_id, thread_id, kind, payload, attempts, alerts_done,"
            " parts_done, next_attempt_at FROM notifications WHERE status = 'pending'"
            " AND chat_id = ? AND id <= ? ORDER BY id",
            (chat_id, last_id),
        )
        return [PendingNotification.from_row(row) for row in rows]

    def record_progress(self, progress: dict[int, tuple[int, int, bool]], now: float) -> None:
        """After Telegram accepted a message: per notification id, (alerts done, parts of the
        next alert done, finished)."""
        with self.database.transaction() as db:
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
        with self.database.transaction() as db:
            for notification_id in ids:
                db.execute(
                    "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?,"
                    " last_error = ? WHERE id = ? AND status = 'pending'",
                    (next_attempt_at, error[:500], notification_id),
                )

    def give_up(self, notification_id: int, error: str) -> None:
        """Stop trying one notification whose loss costs nothing worth a dead letter (an edit
        of a message that is gone)."""
        with self.database.transaction() as db:
            db.execute(
                "UPDATE notifications SET status = 'dead', last_error = ?, attempts = attempts + 1"
                " WHERE id = ? AND status = 'pending'",
                (error[:500], notification_id),
            )

    def dead_letter(
        self,
        ids: Iterable[int],
        text: str,
        error: str,
        now: float,
        then: list[NewNotification] | None = None,
    ) -> int:
        """Give up on notifications: mark them dead and keep what could not be sent; when any
        was moved, queue `then` (the report about them) in the same transaction."""
        moved = 0
        with self.database.transaction() as db:
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
                    (notification_id, row["chat_id"], text, error[:500], now),
                )
                moved += 1
            if moved and then:
                self.insert(db, then, now)
        return moved

    def queue_stats(self, now: float) -> tuple[int, float]:
        """(pending notifications, age in seconds of the oldest one or 0)."""
        row = self.database.query(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM notifications"
            " WHERE status = 'pending'"
        )[0]
        oldest = row["oldest"]
        return row["pending"], (max(0.0, now - oldest) if oldest is not None else 0.0)

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self.database.query("SELECT COUNT(*) AS n FROM notifications")[0]["n"]
        rows = self.database.query(
            "SELECT COUNT(*) AS n FROM notifications WHERE status = ?", (status,)
        )
        return rows[0]["n"]

    @staticmethod
    def forget_sent_before(db: sqlite3.Connection, moment: float) -> None:
        db.execute("DELETE FROM notifications WHERE status = 'sent' AND sent_at < ?", (moment,))
