"""Which message announced which alert, per chat and topic: so that a resolved notice can reply
to the firing message it closes, and that message can be marked resolved once all its alerts are.

An alert is known by its fingerprint and start time: a re-fire after it resolved starts again,
so it is a new alert with a new message of its own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from alert_bot.store.database import Database


@dataclass(frozen=True)
class FiringMessage:
    """A message that announced alerts, with the text it was sent with."""

    chat_id: int
    message_id: int
    thread_id: int | None
    html: str
    as_html: bool


@dataclass(frozen=True)
class ClosedMessage:
    """A firing message whose alerts all resolved: how long the longest of them lasted."""

    message: FiringMessage
    alerts: int
    lasted: float


def _thread_key(thread_id: int | None) -> int:
    return thread_id or 0


class AlertThreads:
    def __init__(self, database: Database):
        self.database = database

    def record_firing(
        self,
        db: sqlite3.Connection,
        chat_id: int,
        thread_id: int | None,
        message_id: int,
        html: str,
        as_html: bool,
        alerts: list[tuple[str, float | None]],
        now: float,
    ) -> None:
        """A message announcing these firing alerts (key, start) went out. An alert already open
        in this chat and topic keeps the message that first announced it."""
        key = _thread_key(thread_id)
        db.execute(
            "INSERT OR REPLACE INTO thread_messages (chat_id, message_id, thread_id, html,"
            " as_html, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
            (chat_id, message_id, thread_id, html, int(as_html), now),
        )
        for alert_key, started in alerts:
            db.execute(
                "INSERT OR IGNORE INTO thread_members (chat_id, message_id, thread_key, alert_key)"
                " VALUES (?, ?, ?, ?)",
                (chat_id, message_id, key, alert_key),
            )
            row = db.execute(
                "SELECT resolved_at FROM thread_alerts WHERE chat_id = ? AND thread_key = ?"
                " AND alert_key = ?",
                (chat_id, key, alert_key),
            ).fetchone()
            if row is not None and row["resolved_at"] is None:
                continue
            db.execute(
                "INSERT OR REPLACE INTO thread_alerts (chat_id, thread_key, alert_key, message_id,"
                " started_at) VALUES (?, ?, ?, ?, ?)",
                (chat_id, key, alert_key, message_id, started),
            )

    def firing_message(self, chat_id: int, thread_id: int | None, alert_key: str) -> int | None:
        """The message that announced this alert here, if the bot still knows it."""
        rows = self.database.query(
            "SELECT message_id FROM thread_alerts WHERE chat_id = ? AND thread_key = ?"
            " AND alert_key = ?",
            (chat_id, _thread_key(thread_id), alert_key),
        )
        return rows[0]["message_id"] if rows else None

    def record_resolved(
        self,
        db: sqlite3.Connection,
        chat_id: int,
        thread_id: int | None,
        alerts: list[tuple[str, float | None]],
        now: float,
    ) -> list[ClosedMessage]:
        """These alerts' resolved notice went out; the firing messages now wholly resolved
        (each returned once, ever)."""
        key = _thread_key(thread_id)
        touched: set[int] = set()
        for alert_key, ended in alerts:
            db.execute(
                "UPDATE thread_alerts SET resolved_at = ?, ended_at = ? WHERE chat_id = ?"
                " AND thread_key = ? AND alert_key = ? AND resolved_at IS NULL",
                (now, ended, chat_id, key, alert_key),
            )
            for row in db.execute(
                "SELECT message_id FROM thread_members WHERE chat_id = ? AND thread_key = ?"
                " AND alert_key = ?",
                (chat_id, key, alert_key),
            ):
                touched.add(row["message_id"])
        closed = []
        for message_id in sorted(touched):
            message = db.execute(
                "SELECT * FROM thread_messages WHERE chat_id = ? AND message_id = ? AND closed = 0",
                (chat_id, message_id),
            ).fetchone()
            if message is None:
                continue
            members = db.execute(
                "SELECT a.alert_key AS known, a.resolved_at, a.started_at, a.ended_at"
                " FROM thread_members m"
                " LEFT JOIN thread_alerts a ON a.chat_id = m.chat_id"
                " AND a.thread_key = m.thread_key AND a.alert_key = m.alert_key"
                " WHERE m.chat_id = ? AND m.message_id = ?",
                (chat_id, message_id),
            ).fetchall()
            if any(m["known"] is not None and m["resolved_at"] is None for m in members):
                continue
            lasted = max(
                (
                    m["ended_at"] - m["started_at"]
                    for m in members
                    if m["ended_at"] is not None and m["started_at"] is not None
                ),
                default=0.0,
            )
            db.execute(
                "UPDATE thread_messages SET closed = 1 WHERE chat_id = ? AND message_id = ?",
                (chat_id, message_id),
            )
            closed.append(
                ClosedMessage(
                    FiringMessage(
                        chat_id,
                        message_id,
                        message["thread_id"],
                        message["html"],
                        bool(message["as_html"]),
                    ),
                    len(members),
                    max(0.0, lasted),
                )
            )
        return closed

    @staticmethod
    def forget_before(db: sqlite3.Connection, moment: float) -> None:
        """Forget messages sent before moment (a resolved notice for them is then sent plainly)."""
        old = "SELECT chat_id, message_id FROM thread_messages WHERE sent_at < ?"
        db.execute(f"DELETE FROM thread_alerts WHERE (chat_id, message_id) IN ({old})", (moment,))
        db.execute(f"DELETE FROM thread_members WHERE (chat_id, message_id) IN ({old})", (moment,))
        db.execute("DELETE FROM thread_messages WHERE sent_at < ?", (moment,))
