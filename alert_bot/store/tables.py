"""The store's small tables: HA dedupe keys, silence-button matchers, chat migrations and the
key/value state (update offset, watchdog). Each is a named piece over the shared database."""

from __future__ import annotations

import json
import secrets
import sqlite3

from alert_bot.store.database import Database


class Table:
    """A named piece of the store over the shared database."""

    def __init__(self, database: Database):
        self.database = database


class AgingTable(Table):
    """A table whose rows are forgotten once old: those with the AGED_BY column before the
    moment go in the store's clean-up."""

    TABLE = ""
    AGED_BY = ""

    @classmethod
    def forget_before(cls, db: sqlite3.Connection, moment: float) -> None:
        db.execute(f"DELETE FROM {cls.TABLE} WHERE {cls.AGED_BY} < ?", (moment,))


class DedupeKeys(AgingTable):
    """Group keys already stored: a second HA Alertmanager's copy of a notification is dropped.
    Used inside the outbox's transaction, so a key and its notifications commit together."""

    TABLE = "dedupe"
    AGED_BY = "seen_at"

    @staticmethod
    def seen_within(db: sqlite3.Connection, key: str, now: float, window: float) -> bool:
        """True for a duplicate; otherwise the key is (re)stamped now."""
        row = db.execute("SELECT seen_at FROM dedupe WHERE key = ?", (key,)).fetchone()
        if row is not None and now - row["seen_at"] < window:
            return True
        db.execute("INSERT OR REPLACE INTO dedupe (key, seen_at) VALUES (?, ?)", (key, now))
        return False


class ChatMigrations(Table):
    """Groups that became supergroups: old id → new id, followed wherever a chat id is used."""

    @staticmethod
    def follow(db: sqlite3.Connection, chat_id: int) -> int:
        seen = set()
        while chat_id not in seen:
            seen.add(chat_id)
            row = db.execute(
                "SELECT new_chat_id FROM chat_migrations WHERE old_chat_id = ?", (chat_id,)
            ).fetchone()
            if row is None:
                break
            chat_id = row["new_chat_id"]
        return chat_id

    def resolve(self, chat_id: int) -> int:
        """The id the chat has now (itself when it never moved)."""
        with self.database.reading() as db:
            return self.follow(db, chat_id)

    def former_ids(self, chat_id: int) -> list[int]:
        """The ids this chat had before it was upgraded (possibly more than once)."""
        former: list[int] = []
        frontier = [chat_id]
        while frontier and len(former) < 100:
            rows = self.database.query(
                "SELECT old_chat_id FROM chat_migrations WHERE new_chat_id = ?", (frontier.pop(),)
            )
            for row in rows:
                old = row["old_chat_id"]
                if old != chat_id and old not in former:
                    former.append(old)
                    frontier.append(old)
        return former

    def record(self, old_chat_id: int, new_chat_id: int, now: float) -> None:
        """A group became a supergroup: remember it and move what waits for the old id."""
        with self.database.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO chat_migrations (old_chat_id, new_chat_id, migrated_at)"
                " VALUES (?, ?, ?)",
                (old_chat_id, new_chat_id, now),
            )
            db.execute(
                "UPDATE notifications SET chat_id = ? WHERE chat_id = ? AND status = 'pending'",
                (new_chat_id, old_chat_id),
            )


class SilenceButtons(AgingTable):
    """Matchers kept under a short id that fits in a button's 64-byte callback data."""

    TABLE = "silence_buttons"
    AGED_BY = "created_at"

    def save(self, silences: list[list[dict]], description: str, now: float) -> str:
        """The short id for these silences, one matcher list each (the same id when they were
        offered before)."""
        encoded = json.dumps(silences, sort_keys=True, ensure_ascii=False)
        with self.database.transaction() as db:
            row = db.execute(
                "SELECT short_id FROM silence_buttons WHERE matchers = ?", (encoded,)
            ).fetchone()
            if row is not None:
                # Offered again: the button's age counts from now, so pruning spares it.
                db.execute(
                    "UPDATE silence_buttons SET created_at = ? WHERE short_id = ?",
                    (now, row["short_id"]),
                )
                return row["short_id"]
            short_id = secrets.token_urlsafe(6)
            db.execute(
                "INSERT INTO silence_buttons (short_id, matchers, description, created_at)"
                " VALUES (?, ?, ?, ?)",
                (short_id, encoded, description, now),
            )
            return short_id

    def target(self, short_id: str) -> tuple[list[list[dict]], str] | None:
        """(silences, description) behind a button, or None once it was forgotten."""
        rows = self.database.query(
            "SELECT matchers, description FROM silence_buttons WHERE short_id = ?", (short_id,)
        )
        if not rows:
            return None
        silences = json.loads(rows[0]["matchers"])
        if silences and isinstance(silences[0], dict):
            silences = [silences]  # a button saved before buttons held several silences
        return silences, rows[0]["description"]


class StateTable(Table):
    """Small named values that must survive a restart."""

    def get(self, key: str) -> str | None:
        rows = self.database.query("SELECT value FROM state WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set(self, key: str, value: str) -> None:
        with self.database.transaction() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
