"""The dead man's switch: silence from the Watchdog heartbeat is reported once, and its return."""

from __future__ import annotations

import time

from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT
from tests.support import wait_until

FAST_WATCHDOG = {"watchdog": {"enabled": True, "timeout": "1500ms", "check_interval": "100ms"}}


def heartbeat() -> dict:
    beat = botkit.alert(name="Watchdog", severity="none", gpu=None, rig="", summary="heartbeat")
    return botkit.notification(beat, group_key='{}:{alertname="Watchdog"}')


def test_watchdog_silence_is_reported_once_and_its_return_too(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url, FAST_WATCHDOG)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        for _ in range(3):
            assert botkit.post(base, heartbeat())[0] == 200
            time.sleep(0.5)
        assert telegram.sent() == []  # heartbeats are not messages
        seen = botkit.metric_value(base, "rigwatch_bot_watchdog_last_seen_timestamp_seconds")
        assert abs(seen - time.time()) < 5
        # The heartbeat stops.
        wait_until(
            lambda: any("pipeline is silent" in t for t in telegram.visible_texts(CHAT)),
            timeout=10,
            what="silence notice",
        )
        time.sleep(2)  # well past another timeout: still only one notice
        notices = [t for t in telegram.visible_texts(CHAT) if "pipeline is silent" in t]
        assert len(notices) == 1
        assert "Watchdog" in notices[0]
        # It comes back.
        assert botkit.post(base, heartbeat())[0] == 200
        wait_until(
            lambda: any("pipeline is back" in t for t in telegram.visible_texts(CHAT)),
            timeout=10,
            what="back notice",
        )
        assert len(telegram.sent(CHAT)) == 2
        # A heartbeat that shares a notification with a real alert lets the alert through.
        mixed = botkit.notification(
            heartbeat()["alerts"][0], botkit.alert(summary="real one"), group_key="mixed"
        )
        assert botkit.post(base, mixed)[0] == 200
        wait_until(lambda: "real one" in telegram.visible_texts(CHAT)[-1], what="real alert")
        assert "heartbeat" not in telegram.visible_texts(CHAT)[-1]


def test_watchdog_state_survives_a_restart(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url, FAST_WATCHDOG)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        wait_until(
            lambda: any("pipeline is silent" in t for t in telegram.visible_texts(CHAT)),
            timeout=10,
            what="silence notice (never heard a heartbeat)",
        )
        assert "never since the bot started" in telegram.visible_texts(CHAT)[0]
    with botkit.running_bot(env, run_updates=False) as (app, base):
        time.sleep(2)
        # Still silent: a restart does not repeat the notice...
        assert len([t for t in telegram.visible_texts(CHAT) if "silent" in t]) == 1
        assert botkit.post(base, heartbeat())[0] == 200
        # ...and the return is still announced.
        wait_until(
            lambda: any("pipeline is back" in t for t in telegram.visible_texts(CHAT)),
            what="back notice after restart",
        )
