"""The dead man's switch: silence from the Watchdog heartbeat is reported once, and its return."""

from __future__ import annotations

import time

from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT
from tests.support import wait_until

BEAT_S = 0.5  # the test's heartbeat spacing
# Six beats' spacing: a loaded machine that delays a post or two still sends one in time.
TIMEOUT_S = 6 * BEAT_S
FAST_WATCHDOG = {
    "watchdog": {"enabled": True, "timeout": f"{TIMEOUT_S * 1000:.0f}ms", "check_interval": "100ms"}
}
# A notice is due one timeout after the last beat; the deadline is a margin of ten of those.
DEADLINE_S = 10 * TIMEOUT_S


def heartbeat() -> dict:
    beat = botkit.alert(name="Watchdog", severity="none", gpu=None, rig="", summary="heartbeat")
    return botkit.notification(beat, group_key='{}:{alertname="Watchdog"}')


def test_watchdog_silence_is_reported_once_and_its_return_too(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url, FAST_WATCHDOG)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        for _ in range(3):
            assert botkit.post(base, heartbeat())[0] == 200
            time.sleep(BEAT_S)  # the heartbeat's own spacing
        assert telegram.sent() == []  # heartbeats are not messages
        seen = botkit.metric_value(base, "rigwatch_bot_watchdog_last_seen_timestamp_seconds")
        assert abs(seen - time.time()) < 5
        # The heartbeat stops.
        wait_until(
            lambda: any("pipeline is silent" in t for t in telegram.visible_texts(CHAT)),
            timeout=DEADLINE_S,
            what="silence notice",
        )
        # A period, not an event: one and a half timeouts more, and still only one notice.
        time.sleep(1.5 * TIMEOUT_S)
        notices = [t for t in telegram.visible_texts(CHAT) if "pipeline is silent" in t]
        assert len(notices) == 1
        assert "Watchdog" in notices[0]
        # It comes back.
        assert botkit.post(base, heartbeat())[0] == 200
        wait_until(
            lambda: any("pipeline is back" in t for t in telegram.visible_texts(CHAT)),
            timeout=DEADLINE_S,
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
            timeout=DEADLINE_S,
            what="silence notice (never heard a heartbeat)",
        )
        assert "never since the bot started" in telegram.visible_texts(CHAT)[0]
    with botkit.running_bot(env, run_updates=False) as (app, base):
        # A period: one and a half timeouts in which the notice is not repeated.
        time.sleep(1.5 * TIMEOUT_S)
        # Still silent: a restart does not repeat the notice...
        assert len([t for t in telegram.visible_texts(CHAT) if "silent" in t]) == 1
        assert botkit.post(base, heartbeat())[0] == 200
        # ...and the return is still announced.
        wait_until(
            lambda: any("pipeline is back" in t for t in telegram.visible_texts(CHAT)),
            timeout=DEADLINE_S,
            what="back notice after restart",
        )
