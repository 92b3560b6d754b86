"""/alerts against a real Alertmanager holding 35 alerts whose labels are ~10,000 characters:
the listing is at most two messages, ends with how many more and where to see them, and other
commands are answered meanwhile."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import pytest

from tests.alert_bot.botkit import CHAT, bot_env, running_bot
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.servers import have_binary, running_alertmanager
from tests.stack.stack_support import post_alerts
from tests.support import wait_until

ALERTS = 35


def _post_alerts(alertmanager: str) -> None:
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    alerts = [
        {
            "labels": {
                "alertname": f"Huge{number}",
                "rig": f"rig{number}",
                "severity": "warning",
                "detail": "x" * 10_000,
            },
            "annotations": {"summary": "y" * 10_000},
            "endsAt": ends,
        }
        for number in range(ALERTS)
    ]
    post_alerts(alertmanager, alerts)


def _firing(alertmanager: str) -> int:
    with urllib.request.urlopen(alertmanager + "/api/v2/alerts", timeout=10) as response:
        return len(json.loads(response.read()))


@pytest.mark.skipif(not have_binary("prometheus-alertmanager"), reason="needs Alertmanager")
def test_many_huge_alerts_are_two_messages_at_most_ending_with_where_to_see_them(
    tmp_path, telegram
):
    with running_alertmanager(tmp_path / "am") as alertmanager:
        _post_alerts(alertmanager)
        wait_until(lambda: _firing(alertmanager) == ALERTS, timeout=20, what="alerts held")
        env = bot_env(tmp_path, telegram.url, alertmanager=alertmanager)
        with running_bot(env):
            before = len(telegram.sent(CHAT))
            telegram.inject_message(CHAT, "/alerts")
            telegram.inject_message(CHAT, "/help")
            wait_until(
                lambda: any("more: all of them in Alertmanager" in t for t in _texts(telegram)),
                timeout=30,
                what="the listing's end",
            )
            sent = telegram.sent(CHAT)[before:]
    texts = [parse_telegram_html(c.params["text"]) for c in sent]
    listing = [t for t in texts if "Huge" in t]
    assert 1 <= len(listing) <= 2, [len(t) for t in texts]
    assert listing[0].startswith(f"{ALERTS} firing alerts")
    last = listing[-1].splitlines()[-1]
    shown = sum(t.count(" Huge") for t in listing)
    assert 0 < shown < ALERTS
    assert last == (
        f"… and {ALERTS - shown} more: all of them in Alertmanager, {alertmanager}/#/alerts"
    )
    assert any("/status" in t for t in texts)  # /help answered too


def _texts(telegram) -> list[str]:
    return [parse_telegram_html(c.params["text"]) for c in telegram.sent(CHAT)]
