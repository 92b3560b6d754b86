"""GpuRunStalled end to end: the shipped rule (its `for` shortened) in a real Prometheus over
the real exporter, a real Alertmanager posting to the bot, the message in the fake Telegram,
its resolution, and a silence made with the message's button."""

from __future__ import annotations

import json
import urllib.request

import yaml

from tests.alert_bot.botkit import CHAT, WEBHOOK_TOKEN, bot_env, running_bot
from tests.alert_bot.runkit import RULES, SimulatedRig, training_process
from tests.servers import running_alertmanager, running_prometheus
from tests.support import free_port, running_exporter, wait_until


def _stalled_messages(telegram, status: str) -> list:
    return [
        call
        for call in telegram.sent(CHAT)
        if "GpuRunStalled" in call.params.get("text", "") and status in call.params["text"]
    ]


def _set_utilization(rig: SimulatedRig, percent: int) -> None:
    with rig._lock:
        rig.scenario["devices"][0]["utilization_gpu_percent"] = percent
    rig.write()


def test_stalled_run_fires_resolves_and_is_silenced_from_the_chat(tmp_path, telegram):
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "GpuRunStalled":
                rule["for"] = "2s"
    short_rules = tmp_path / "runs.yml"
    short_rules.write_text(yaml.safe_dump(rules, allow_unicode=True))
    rig = SimulatedRig(tmp_path / "scenario.json", cards=1)
    _set_utilization(rig, 2)
    train = training_process(tmp_path, "train.py")
    bot_port = free_port()
    env = bot_env(tmp_path, telegram.url, {"runs": {"enabled": False}}, port=bot_port)
    alertmanager_config = (
        "route: {receiver: bot, group_by: [alertname, rig], group_wait: 1s,"
        " group_interval: 1s, repeat_interval: 1h}\n"
        "receivers:\n  - name: bot\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{bot_port}/alertmanager\n"
        "        send_resolved: true\n"
        f"        http_config: {{authorization: {{type: Bearer, credentials: {WEBHOOK_TOKEN}}}}}\n"
    )
    try:
        rig.place(train.pid, [0])
        with (
            rig,
            running_exporter(rig.path, "--nvml.retry-max-seconds=0.5") as (_, exporter),
            running_alertmanager(tmp_path, alertmanager_config) as alertmanager,
        ):
            env["ALERTMANAGER_URL"] = alertmanager
            prometheus_config = (
                "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
                f"rule_files: ['{short_rules}']\n"
                "alerting: {alertmanagers: [{static_configs: "
                f"[{{targets: ['{alertmanager.removeprefix('http://')}']}}]}}]}}\n"
                "scrape_configs:\n  - job_name: rigwatch\n"
                f"    static_configs: [{{targets: ['{exporter.removeprefix('http://')}'],"
                " labels: {rig: rig1}}]\n"
            )
            with running_prometheus(tmp_path, prometheus_config), running_bot(env):
                wait_until(lambda: _stalled_messages(telegram, "FIRING"), 60, what="firing")
                fired = _stalled_messages(telegram, "FIRING")[0]
                assert "Run train.py (pid" in fired.params["text"]
                assert (
                    "holds GPU memory but its cards are at 2% utilisation" in (fired.params["text"])
                )
                _set_utilization(rig, 90)
                wait_until(lambda: _stalled_messages(telegram, "RESOLVED"), 60, what="resolved")
                _set_utilization(rig, 1)
                wait_until(
                    lambda: len(_stalled_messages(telegram, "FIRING")) >= 2, 60, what="again"
                )
                again = _stalled_messages(telegram, "FIRING")[-1]
                buttons = json.loads(again.params["reply_markup"])["inline_keyboard"][0]
                one_hour = next(b["callback_data"] for b in buttons if b["text"].endswith("1h"))
                answered = len(telegram.calls_to("answerCallbackQuery"))
                telegram.inject_callback(
                    CHAT, one_hour, message_id=again.response["result"]["message_id"]
                )
                wait_until(lambda: _silenced(alertmanager), 30, what="the alert silenced")
                silence = _active_silences(alertmanager)[0]
                matchers = {m["name"]: m["value"] for m in silence["matchers"]}
                assert matchers["alertname"] == "GpuRunStalled"
                assert matchers["pid"] == str(train.pid)
                # The bot has finished with the press before it stops.
                wait_until(
                    lambda: len(telegram.calls_to("answerCallbackQuery")) > answered,
                    30,
                    what="the press answered",
                )
    finally:
        train.kill()
        train.wait()


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _active_silences(alertmanager: str) -> list[dict]:
    return [s for s in _get(alertmanager + "/api/v2/silences") if s["status"]["state"] == "active"]


def _silenced(alertmanager: str) -> bool:
    alerts = _get(alertmanager + "/api/v2/alerts?silenced=true&active=false&inhibited=false")
    return any(
        a["labels"].get("alertname") == "GpuRunStalled" and a["status"]["state"] == "suppressed"
        for a in alerts
    )
