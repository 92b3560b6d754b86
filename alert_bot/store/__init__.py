"""The bot's durable store: one SQLite file holding the outbox of notifications and the small
tables that must survive a restart (dedupe keys, silence buttons, chat migrations, state)."""

from __future__ import annotations

from pathlib import Path

from alert_bot.store.database import Database, StoreError
from alert_bot.store.outbox import NewNotification, Outbox, PendingNotification
from alert_bot.store.tables import ChatMigrations, DedupeKeys, SilenceButtons, StateTable
from alert_bot.store.threads import AlertThreads

__all__ = [
    "AlertThreads",
    "ChatMigrations",
    "Database",
    "DedupeKeys",
    "NewNotification",
    "Outbox",
    "PendingNotification",
    "SilenceButtons",
    "StateTable",
    "Store",
    "StoreError",
]

WEEK = 7 * 86400.0
MONTH = 30 * 86400.0


class Store:
    """The named pieces over one connection (one lock, one file): ``outbox``, ``dedupe``,
    ``migrations``, ``buttons``, ``state`` and ``threads``."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0):
        self.database = Database(path, busy_timeout)
        self.dedupe = DedupeKeys(self.database)
        self.migrations = ChatMigrations(self.database)
        self.buttons = SilenceButtons(self.database)
        self.state = StateTable(self.database)
        self.outbox = Outbox(self.database, self.dedupe, self.migrations)
        self.threads = AlertThreads(self.database)

    @property
    def path(self) -> str:
        return self.database.path

    def prune(
        self,
        now: float,
        dedupe_window: float,
        keep_sent_seconds: float = WEEK,
        keep_buttons_seconds: float = MONTH,
    ) -> None:
        """Forget dedupe keys past their window, delivered notifications older than a week,
        silence buttons not offered for a month (a press then says the button expired) and
        firing messages sent over a month ago (their resolved notice is then sent plainly),
        in one transaction."""
        with self.database.transaction() as db:
            self.dedupe.forget_before(db, now - dedupe_window)
            self.outbox.forget_sent_before(db, now - keep_sent_seconds)
            self.buttons.forget_before(db, now - keep_buttons_seconds)
            self.threads.forget_before(db, now - keep_buttons_seconds)

    def close(self) -> None:
        self.database.close()
