"""Every configured chat is checked with Telegram (getChat) at start: a chat Telegram does not
know is a configuration error, exit 2, one line naming the setting and the id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.alert_bot.botkit import CHAT, bot_env, bot_process
from tests.support import REPO, free_port, wait_until

MISSING = -1009999999999


def _start_fails(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alert_bot"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_wrong_telegram_chat_id_is_one_line_naming_it_and_exit_2(tmp_path, telegram):
    telegram.missing_chats.add(CHAT)
    result = _start_fails(bot_env(tmp_path, telegram.url, port=free_port()))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert errors == [
        f"rigwatch-bot: configuration error: TELEGRAM_CHAT_ID: Telegram cannot reach chat {CHAT}"
        " (Bad Request: chat not found): check the id (/start in the chat shows it) and that "
        "the bot is a member there"
    ], result.stderr
    assert not telegram.sent()  # nothing was dead-lettered or sent


def test_a_wrong_routed_chat_is_named_by_its_route(tmp_path, telegram):
    telegram.missing_chats.add(MISSING)
    env = bot_env(tmp_path, telegram.url, port=free_port())
    config = Path(env["ALERT_BOT_CONFIG"])
    settings = yaml.safe_load(config.read_text())
    settings["routes"] = [{"chat_id": CHAT, "match": {"rig": "a"}}, {"chat_id": MISSING}]
    config.write_text(yaml.safe_dump(settings))
    result = _start_fails(env)
    assert result.returncode == 2, result.stderr
    assert (
        f"configuration error: ALERT_BOT_CONFIG routes[1].chat_id: Telegram cannot reach chat "
        f"{MISSING} (Bad Request: chat not found)" in result.stderr
    ), result.stderr


def test_reachable_chats_start_the_bot(tmp_path, telegram):
    env = bot_env(tmp_path, telegram.url, port=free_port())
    with bot_process(env) as (proc, _):
        wait_until(lambda: "listening on" in proc.output(), what="the start line")
    asked = {int(c.params["chat_id"]) for c in telegram.calls_to("getChat")}
    assert asked == {CHAT}


def test_the_refusal_names_telegram_chat_id_as_what_would_fix_it(tmp_path, telegram):
    from tests.alert_bot.botkit import STRANGER, running_bot
    from tests.alert_bot.fake_telegram import parse_telegram_html

    with running_bot(bot_env(tmp_path, telegram.url)):
        telegram.inject_message(STRANGER, "/status")
        wait_until(lambda: telegram.sent(STRANGER), timeout=20, what="the refusal")
    text = parse_telegram_html(telegram.sent(STRANGER)[0].params["text"])
    assert f"Its id is {STRANGER}: set TELEGRAM_CHAT_ID to it if alerts should come here" in text
    assert "access.allowed_chat_ids" in text


def test_a_chat_unreachable_later_is_reported_in_another_chat_and_counted(tmp_path, telegram):
    from tests.alert_bot.botkit import alert, metric_value, notification, post, webhook_bot

    routed = -100777
    settings = {"routes": [{"chat_id": routed, "match": {"rig": "far"}}]}
    with webhook_bot(tmp_path, telegram.url, settings) as (_, base):
        telegram.missing_chats.add(routed)  # the bot was removed from it after the start
        assert post(base, notification(alert(rig="far")))[0] == 200
        wait_until(
            lambda: any(f"cannot reach chat {routed}" in t for t in telegram.visible_texts(CHAT)),
            timeout=30,
            what="the report in the default chat",
        )
        assert metric_value(base, "rigwatch_bot_chat_unreachable_total", {"chat": str(routed)}) == 1
    assert not telegram.sent(routed)


def test_a_chat_that_blocked_the_bot_is_reported_elsewhere_and_not_retried(tmp_path, telegram):
    """Telegram's 403 (the user blocked the bot, the bot was kicked from the group) is the chat
    refusing the bot, not an outage: the notification goes to the dead letters after one try,
    the default chat hears of it, the chat is counted; nothing is sent there again and again."""
    from tests.alert_bot.botkit import alert, metric_value, notification, post, webhook_bot

    blocked = -100888
    settings = {"routes": [{"chat_id": blocked, "match": {"rig": "far"}}]}
    with webhook_bot(tmp_path, telegram.url, settings) as (_, base):
        telegram.fail(
            403,
            "Forbidden: bot was blocked by the user",
            count=1000,
            predicate=lambda params: int(params.get("chat_id", 0)) == blocked,
        )
        assert post(base, notification(alert(rig="far")))[0] == 200
        report = wait_until(
            lambda: next(
                (t for t in telegram.visible_texts(CHAT) if f"cannot reach chat {blocked}" in t),
                None,
            ),
            timeout=30,
            what="the report in the default chat",
        )
        assert (
            metric_value(base, "rigwatch_bot_chat_unreachable_total", {"chat": str(blocked)}) == 1
        )
        assert metric_value(base, "rigwatch_bot_dead_letters_total") == 1
        # A second alert for the blocked chat: one more try, one more report, then quiet.
        assert post(base, notification(alert(rig="far", gpu="1")))[0] == 200
        wait_until(
            lambda: (
                metric_value(base, "rigwatch_bot_chat_unreachable_total", {"chat": str(blocked)})
                == 2
            ),
            timeout=30,
            what="the second refusal counted",
        )
    tries = [c for c in telegram.calls if int(c.params.get("chat_id", 0)) == blocked]
    assert len(tries) == 2, [c.method for c in tries]
    assert "Telegram refused it: Forbidden: bot was blocked by the user" in report, report
    assert "Alerts: GpuTooHot" in report, report
