"""The store's schema upgrades (alert_bot/store/schema.py): a file written by rigwatch 0.1.0
(tests/alert_bot/fixtures/store-0.1.0.db, with alerts still waiting for Telegram) opened by this
release loses nothing, steps apply in order and all or none, and a file from a newer release is
refused with a message saying what to do."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alert_bot.runs.table import RunTable
from alert_bot.store import Store, StoreError
from alert_bot.store.schema import LATEST, MIGRATIONS, Migration, migrate, schema_version
from tests.alert_bot.botkit import BOT_TOKEN, bot_env, webhook_bot
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.support import REPO, inherited_environment, wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0.db"


def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "bot.db"
    shutil.copyfile(FIXTURE, path)
    with sqlite3.connect(path) as db:
        assert schema_version(db) == 0, "0.1.0 wrote no schema version"
    return path


def test_a_store_written_by_0_1_0_is_upgraded_with_every_row_kept(tmp_path: Path) -> None:
    store = Store(old_store(tmp_path))
    try:
        assert store.database.upgraded_from == 0
        with store.database.reading() as db:
            assert schema_version(db) == LATEST
        assert store.outbox.count("pending") == 4
        assert store.outbox.count("sent") == 1
        pending = store.outbox.pending_for_chat(-1001, limit=10)
        names = [a["labels"]["alertname"] for n in pending for a in n.payload.get("alerts", [])]
        assert names == ["GpuTemperatureCritical", "GpuFellOffTheBus", "GpuXidCritical"]
        (button,) = store.database.query("SELECT short_id FROM silence_buttons")
        assert store.buttons.target(button["short_id"])[1] == "GpuTemperatureCritical on rig1"
        assert store.state.get("telegram_update_offset") == "123456"
        assert store.migrations.resolve(-1000) == -1001
        runs = RunTable(store)
        assert [r.pid for r in runs.running()] == [4242]
        assert [r.run_name for r in runs.ended_since(0)] == ["eval.py"]
    finally:
        store.close()
    # Opened again, it is already current: nothing to do.
    again = Store(tmp_path / "bot.db")
    try:
        assert again.database.upgraded_from is None
    finally:
        again.close()


def test_the_alerts_an_old_store_held_reach_the_chat_after_the_upgrade(tmp_path: Path) -> None:
    """The bot started on the 0.1.0 file delivers what that release had not sent yet."""
    old_store(tmp_path)
    waiting = ("GpuTemperatureCritical", "GpuFellOffTheBus", "GpuXidCritical", "Run ended")
    with FakeTelegram(BOT_TOKEN) as telegram, webhook_bot(tmp_path, telegram.url):

        def delivered() -> bool:
            texts = "\n".join(telegram.texts(-1001))
            return all(name in texts for name in waiting) and bool(telegram.texts(222))

        wait_until(delivered, timeout=30, what="the four notifications the old store held")
        assert "HostDiskFull" not in "\n".join(telegram.texts(-1001)), "what 0.1.0 sent stays sent"
        assert telegram.texts(222) == ["⚠️ the watchdog went silent"]


def test_a_store_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1}.*newer rigwatch"):
        Store(path)


def test_steps_apply_in_order_and_all_or_none(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "steps.db", isolation_level=None)
    try:
        assert migrate(db, MIGRATIONS) == (0, LATEST)
        db.execute("INSERT INTO state (key, value) VALUES ('kept', 'yes')")
        add_column = Migration(LATEST + 1, "a column", ("ALTER TABLE state ADD COLUMN note TEXT",))
        broken = Migration(LATEST + 2, "a broken step", ("CREATE TABLE state (x)",))
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            migrate(db, (*MIGRATIONS, add_column, broken))
        assert schema_version(db) == LATEST, "a failed upgrade leaves the version as it was"
        columns = [row[1] for row in db.execute("PRAGMA table_info(state)")]
        assert "note" not in columns, "and none of its steps"
        fill = Migration(LATEST + 2, "fill it", ("UPDATE state SET note = 'from ' || value",))
        assert migrate(db, (*MIGRATIONS, add_column, fill)) == (LATEST, LATEST + 2)
        assert db.execute("SELECT note FROM state").fetchone()[0] == "from yes"
        with pytest.raises(ValueError, match="must rise"):
            migrate(db, (add_column, *MIGRATIONS))
    finally:
        db.close()


def test_the_bot_refuses_to_start_on_a_newer_store(tmp_path: Path) -> None:
    env = bot_env(tmp_path, "http://127.0.0.1:9/")
    Store(env["ALERT_BOT_DB"]).close()
    with sqlite3.connect(env["ALERT_BOT_DB"]) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 3}")
    done = subprocess.run(
        [sys.executable, "-m", "alert_bot"],
        env={**inherited_environment(), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("rigwatch-bot: configuration error: ALERT_BOT_DB: cannot open the store")
    assert f"schema version {LATEST + 3}, written by a newer rigwatch" in line


def test_a_new_store_is_created_at_the_latest_version_without_an_upgrade(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.db")
    try:
        assert store.database.upgraded_from is None
        with store.database.reading() as db:
            assert schema_version(db) == LATEST
    finally:
        store.close()
