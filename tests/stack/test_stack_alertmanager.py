"""Static checks of prometheus/alertmanager.yml: amtool's config check, where each kind of
alert is routed (amtool config routes test), and the timing and auth the stack relies on."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.stack.stack_support import ALERTMANAGER_CONFIG, run_tool

CONFIG = str(ALERTMANAGER_CONFIG)


def _config() -> dict:
    return yaml.safe_load(ALERTMANAGER_CONFIG.read_text())


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def test_amtool_accepts_the_config():
    result = run_tool("amtool", "check-config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


ROUTES = [
    (
        {"alertname": "GpuTemperatureCritical", "severity": "critical", "rig": "rig1"},
        "bot-critical",
    ),
    (
        {"alertname": "GpuTemperatureNearSlowdown", "severity": "warning", "rig": "rig1"},
        "bot-warning",
    ),
    ({"alertname": "GpuMemoryAlmostFull", "severity": "info", "rig": "rig1"}, "bot-info"),
    ({"alertname": "Watchdog", "severity": "none"}, "bot-watchdog"),
    # The heartbeat keeps its own route whatever severity someone gives it.
    ({"alertname": "Watchdog", "severity": "critical"}, "bot-watchdog"),
    # An alert from someone else's rule without a severity still reaches the bot.
    ({"alertname": "SomethingElse"}, "bot-default"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES, ids=[r for _, r in ROUTES])
def test_route(labels, receiver):
    args = [f"{k}={v}" for k, v in labels.items()]
    result = run_tool(
        "amtool", "config", "routes", "test", f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_a_wrong_route_expectation_fails():
    result = run_tool(
        "amtool", "config", "routes", "test", f"--config.file={CONFIG}",
        "--verify.receivers=bot-info", "alertname=GpuLost", "severity=critical",
    )  # fmt: skip
    assert result.returncode != 0


def test_every_receiver_is_the_bot_webhook_with_a_token_file():
    receivers = _config()["receivers"]
    assert receivers
    for receiver in receivers:
        hooks = receiver["webhook_configs"]
        assert len(hooks) == 1
        hook = hooks[0]
        assert hook["url"] == "http://alert-bot:10736/alertmanager"
        assert hook["send_resolved"] is True
        # ~2.5 kB per alert with annotations: 200 stay far under the bot's 1 MiB body limit.
        assert 0 < hook["max_alerts"] <= 200
        auth = hook["http_config"]["authorization"]
        assert auth["type"] == "Bearer"
        assert auth["credentials_file"] and "credentials" not in auth


def test_grouping_and_timing_suit_a_phone():
    route = _config()["route"]
    assert route["group_by"] == ["alertname", "rig"]
    by_receiver = {child["receiver"]: child for child in route["routes"]}
    repeat = {name: _seconds(r["repeat_interval"]) for name, r in by_receiver.items()}
    wait = {name: _seconds(r["group_wait"]) for name, r in by_receiver.items()}
    assert repeat["bot-critical"] < repeat["bot-warning"] < repeat["bot-info"]
    assert wait["bot-critical"] <= wait["bot-warning"] <= wait["bot-info"]
    # The bot's default heartbeat timeout is 10 minutes: the Watchdog must come well within.
    assert repeat["bot-watchdog"] <= 300
    assert by_receiver["bot-watchdog"]["matchers"] == ['alertname="Watchdog"']
    # Watchdog first, so no severity route can swallow it.
    assert route["routes"][0]["receiver"] == "bot-watchdog"


def test_critical_inhibits_warning_for_the_same_card_only():
    rules = _config()["inhibit_rules"]
    card_rule = next(r for r in rules if 'severity="critical"' in r["source_matchers"])
    assert 'gpu=~".+"' in card_rule["source_matchers"]
    assert card_rule["target_matchers"] == ['severity="warning"']
    assert {"rig", "instance", "gpu"} <= set(card_rule["equal"])
