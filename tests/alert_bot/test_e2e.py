"""End to end with the stack's shipped configuration: the exporter on the simulated NVML → a real
Prometheus with prometheus/rules/*.yml → a real Alertmanager with prometheus/alertmanager.yml →
the bot (a real process) → the fake Telegram. Heating a card brings a message with its chart;
cooling it brings the resolved notice.

Only the clock is changed in the copies: `for:` durations and Alertmanager's group timings are
cut to seconds, and the webhook URL and token file point at this test's bot.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert_bot.botkit import (
    CHAT,
    WEBHOOK_TOKEN,
    bot_env,
    bot_process,
    wait_prometheus_has,
)
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.servers import have_binary, running_alertmanager, running_prometheus
from tests.support import (
    REPO,
    build_fake_nvml,
    free_port,
    make_device,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

STACK = REPO / "prometheus"

pytestmark = pytest.mark.skipif(
    not (
        have_binary("prometheus")
        and have_binary("prometheus-alertmanager")
        and (STACK / "alertmanager.yml").exists()
        and list((STACK / "rules").glob("*.yml"))
    ),
    reason="needs Debian's prometheus and alertmanager (tests/run.sh installs them)",
)


def _fast_rules(target_dir: Path, wait: str = "2s") -> list[Path]:
    target_dir.mkdir()
    copies = []
    for rules in sorted((STACK / "rules").glob("*.yml")):
        text = re.sub(r"(\n\s+for:\s*)\d+[smhd]", rf"\g<1>{wait}", rules.read_text())
        copy = target_dir / rules.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def _fast_alertmanager(bot_url: str, token_file: Path) -> str:
    text = (STACK / "alertmanager.yml").read_text()
    text = re.sub(r"(group_wait:\s*)\S+", r"\g<1>1s", text)
    text = re.sub(r"(group_interval:\s*)\S+", r"\g<1>1s", text)
    text = text.replace("http://alert-bot:10736/alertmanager", bot_url + "/alertmanager")
    text = re.sub(r"credentials_file:\s*\S+", f"credentials_file: {token_file}", text)
    assert bot_url in text and str(token_file) in text
    return text


@contextlib.contextmanager
def _running_chain(
    tmp_path: Path,
    telegram,
    scenario: Path,
    settings: dict,
    *exporter_args: str,
    wait: str = "2s",
) -> Iterator[tuple]:
    """The whole chain on the fast clock: the exporter on ``scenario`` → a real Prometheus with
    the shipped rules (every `for:` set to ``wait``) → the shipped Alertmanager → the bot with
    ``settings`` → the fake Telegram. Yields the bot's process, Prometheus's URL and the bot's
    port."""
    token_file = tmp_path / "webhook_token"
    token_file.write_text(WEBHOOK_TOKEN)
    bot_port = free_port()
    rules = _fast_rules(tmp_path / "rules", wait)
    with running_exporter(scenario, *exporter_args) as (_, exporter_url):
        am_config = _fast_alertmanager(f"http://127.0.0.1:{bot_port}", token_file)
        with running_alertmanager(tmp_path, am_config) as alertmanager:
            prometheus_port = free_port()
            prometheus_config = (
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "alerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: ['{alertmanager.removeprefix('http://')}']\n"
                f"rule_files: {json.dumps([str(r) for r in rules])}\n"
                "scrape_configs:\n  - job_name: rigwatch\n    static_configs:\n"
                f"      - targets: ['{exporter_url.removeprefix('http://')}']\n"
                "        labels: {rig: rig1}\n"
            )
            env = bot_env(
                tmp_path,
                telegram.url,
                settings,
                prometheus=f"http://127.0.0.1:{prometheus_port}",
                alertmanager=alertmanager,
                port=bot_port,
            )
            with (
                bot_process(env) as (bot, _),
                _prometheus_on(tmp_path, prometheus_config, prometheus_port) as prometheus,
            ):
                yield bot, prometheus, bot_port


def test_heating_a_card_alerts_with_a_chart_and_cooling_resolves(tmp_path, telegram):
    build_fake_nvml()
    scenario = tmp_path / "scenario.json"
    cool = make_scenario(devices=[make_device(0, temperature_c=45), make_device(1)])
    write_scenario(scenario, cool)
    with _running_chain(
        tmp_path, telegram, scenario, {"watchdog": {"enabled": True, "timeout": "5m"}}
    ) as (bot, prometheus, bot_port):
        wait_prometheus_has(prometheus, "rigwatch_gpu_temperature_celsius")
        # The Watchdog heartbeat flows through the whole pipeline first.
        wait_until(
            lambda: _bot_metric(bot_port, "rigwatch_bot_watchdog_last_seen") > 0,
            timeout=40,
            what="Watchdog heartbeat at the bot",
        )
        heated = make_scenario(devices=[make_device(0, temperature_c=96), make_device(1)])
        write_scenario(scenario, heated)
        firing = _wait_for_message(
            telegram, "GpuTemperatureCritical", "FIRING", "the critical alert in Telegram"
        )
        assert "rig rig1 · GPU 0 (NVIDIA GeForce RTX 4090)" in firing
        assert "96 °C" in firing
        photo = wait_until(
            lambda: [
                c
                for c in telegram.calls_to("sendPhoto")
                if "GpuTemperatureCritical" in c.params.get("caption", "")
            ],
            timeout=30,
            what="the chart",
        )[0]
        assert photo.files["photo"].startswith(b"\x89PNG")
        (tmp_path / "chart.png").write_bytes(photo.files["photo"])
        write_scenario(scenario, cool)
        resolved = _wait_for_message(
            telegram, "GpuTemperatureCritical", "RESOLVED", "the resolved notice"
        )
        assert "lasted" in resolved
        assert "rig rig1 · GPU 0" in resolved
        log = bot.output()
    assert "Traceback" not in log, log[-3000:]
    assert telegram.count_status(429) == 0
    assert telegram.count_status(400) == 0


def _wait_for_message(telegram, name: str, word: str, what: str, timeout: float = 60) -> str:
    """The first message about alert ``name`` saying ``word``, once it has come."""
    return wait_until(
        lambda: _message_with(telegram, name, word), timeout=timeout, interval=0.5, what=what
    )


def _message_with(telegram, name: str, word: str) -> str | None:
    for call in telegram.sent(CHAT):
        if call.method != "sendMessage":
            continue
        text = parse_telegram_html(call.params["text"])
        for block in text.split("\n\n"):
            if name in block and word in block:
                return block
    return None


def _bot_metric(port: int, prefix: str) -> float:
    from tests.support import http_get

    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _prometheus_on(tmp_path: Path, config: str, port: int):
    """running_prometheus on a port chosen beforehand (the bot must know it when it starts),
    with generatorURLs pointing at this Prometheus."""
    assert shutil.which("prometheus")
    return running_prometheus(
        tmp_path,
        config,
        extra_args=(
            f"--web.external-url=http://127.0.0.1:{port}/",
            "--rules.alert.resend-delay=1s",
        ),
        port=port,
    )
