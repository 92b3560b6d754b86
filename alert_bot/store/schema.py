"""The store's schema, in one place: an ordered list of migration steps. Opening the file applies
the steps past its `PRAGMA user_version` in one transaction and sets the version, so a release
that adds a table or a column upgrades every existing store without losing what it holds, and
an older release refuses a file a newer one wrote instead of misreading it.

A step is never edited once released: a change is a new step at the end.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    statements: tuple[str, ...]


# Version 1 is the schema rigwatch 0.1.0 created without a version number (user_version 0).
# Its statements keep IF NOT EXISTS, so that such a file, which has the tables already, is
# simply stamped version 1; a new file gets them created.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "outbox, dedupe keys, silence buttons, chat migrations, dead letters, state, alert "
        "threads, runs (rigwatch 0.1.0)",
        (
            """CREATE TABLE IF NOT EXISTS notifications (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created_at REAL NOT NULL,
                chat_id INTEGER NOT NULL,
                thread_id INTEGER,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                dedupe_key TEXT,
                status TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'dead')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at REAL NOT NULL,
                alerts_done INTEGER NOT NULL DEFAULT 0,
                parts_done INTEGER NOT NULL DEFAULT 0,
                sent_at REAL,
                last_error TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS notifications_by_status"
            " ON notifications (status, chat_id, id)",
            "CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
            """CREATE TABLE IF NOT EXISTS silence_buttons (
                short_id TEXT PRIMARY KEY,
                matchers TEXT NOT NULL,
                description TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS chat_migrations (
                old_chat_id INTEGER PRIMARY KEY,
                new_chat_id INTEGER NOT NULL,
                migrated_at REAL NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS dead_letters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                notification_id INTEGER NOT NULL,
                chat_id INTEGER NOT NULL,
                text TEXT NOT NULL,
                error TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS thread_alerts (
                chat_id INTEGER NOT NULL,
                thread_key INTEGER NOT NULL,
                alert_key TEXT NOT NULL,
                message_id INTEGER NOT NULL,
                started_at REAL,
                resolved_at REAL,
                ended_at REAL,
                PRIMARY KEY (chat_id, thread_key, alert_key)
            )""",
            """CREATE TABLE IF NOT EXISTS thread_messages (
                chat_id INTEGER NOT NULL,
                message_id INTEGER NOT NULL,
                thread_id INTEGER,
                html TEXT NOT NULL,
                as_html INTEGER NOT NULL,
                sent_at REAL NOT NULL,
                closed INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (chat_id, message_id)
            )""",
            """CREATE TABLE IF NOT EXISTS thread_members (
                chat_id INTEGER NOT NULL,
                message_id INTEGER NOT NULL,
                thread_key INTEGER NOT NULL,
                alert_key TEXT NOT NULL,
                PRIMARY KEY (chat_id, message_id, alert_key)
            )""",
            """CREATE TABLE IF NOT EXISTS runs (
                instance TEXT NOT NULL,
                pid INTEGER NOT NULL,
                start_time REAL NOT NULL,
                rig TEXT NOT NULL,
                run_name TEXT NOT NULL,
                process TEXT NOT NULL,
                user TEXT NOT NULL,
                container TEXT NOT NULL,
                cards TEXT NOT NULL,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('running', 'ended')),
                ended_at REAL,
                summary TEXT,
                PRIMARY KEY (instance, pid, start_time)
            )""",
            "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, ended_at)",
        ),
    ),
)


LATEST = MIGRATIONS[-1].version


class NewerSchema(RuntimeError):
    """The file was written by a newer rigwatch: its schema version is past every step here."""


def schema_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def migrate(
    connection: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the steps past the file's version in one transaction (all or none), then stamp the
    last one's version; returns (the version found, the version now). The connection must be
    in autocommit mode (isolation_level=None), as the store's is."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or versions[0] < 1:
        raise ValueError(f"migration versions must rise from 1: {versions}")
    found = schema_version(connection)
    latest = versions[-1]
    if found > latest:
        raise NewerSchema(
            f"it holds schema version {found}, written by a newer rigwatch; this one knows up "
            f"to {latest}: run the newer release, or move the file aside to start afresh"
        )
    pending = [m for m in migrations if m.version > found]
    if not pending:
        return found, found
    connection.execute("BEGIN IMMEDIATE")
    try:
        for step in pending:
            for statement in step.statements:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {latest:d}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return found, latest
