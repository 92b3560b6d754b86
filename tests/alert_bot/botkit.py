"""Helpers for the alert bot's tests: payload builders, posting to the webhook, starting the bot
in-process or as a real process, and what a real Prometheus holds."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from alert_bot.app import BotApp
from alert_bot.config import load_config
from alert_bot.store import Store
from alert_bot.telegram.client import TelegramClient, configure_api
from alert_bot.upstream.alertmanager import AlertmanagerClient
from alert_bot.upstream.prometheus import PrometheusClient
from tests.servers import have_binary
from tests.support import (
    REPO,
    ManagedProcess,
    http_get,
    stopped_after,
    wait_until,
)

GPU_RULES = REPO / "prometheus" / "rules" / "gpu.yml"
BOT_TOKEN = "123456789:TEST-secret-token_ABCdef"
WEBHOOK_TOKEN = "webhook-secret-0123456789"
CHAT = 1001  # a private chat (positive id)
GROUP = -100500  # a supergroup
STRANGER = 666
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port

FAST_YAML = {
    "delivery": {"backoff_initial": "200ms", "backoff_max": "2s"},
    "telegram": {"long_poll_timeout": 1},
    "watchdog": {"enabled": False},
}


def alert(
    name: str = "GpuTooHot",
    status: str = "firing",
    severity: str = "warning",
    rig: str = "rig1",
    gpu: str | None = "0",
    summary: str = "GPU 0 is at 91 °C",
    description: str = "",
    starts: str = "2026-11-22T10:00:00Z",
    ends: str = "0001-01-01T00:00:00Z",
    generator: str = "",
    **labels: str,
) -> dict:
    all_labels = {"alertname": name, "severity": severity, "rig": rig, **labels}
    if gpu is not None:
        all_labels["gpu"] = gpu
    annotations = {"summary": summary}
    if description:
        annotations["description"] = description
    if status == "resolved" and ends.startswith("0001"):
        ends = "2026-11-22T10:12:30Z"
    fingerprint = format(abs(hash(json.dumps(all_labels, sort_keys=True))), "016x")[:16]
    return {
        "status": status,
        "labels": all_labels,
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": generator,
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict, group_key: str = '{}:{alertname="GpuTooHot"}') -> dict:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    common = dict(alerts[0]["labels"])
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "version": "4",
        "receiver": "telegram",
        "status": status,
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": list(alerts),
    }


def storm_notifications(tag: str, groups: int = 50, cards: int = 10, **labels: str) -> list[dict]:
    """A storm: groups x cards critical alerts, one notification per rig; each summary carries
    "TAG-GROUP-CARD " so the receiver can check that every alert arrived."""
    return [
        notification(
            *[
                alert(
                    name="GpuTemperatureCritical",
                    severity="critical",
                    rig=f"rig{group}",
                    gpu=str(card),
                    summary=f"{tag}-{group}-{card} is at 93 °C, past its slowdown at 90 °C",
                    **labels,
                )
                for card in range(cards)
            ],
            group_key=f"{tag}-{group}",
        )
        for group in range(groups)
    ]


def post(
    url: str,
    body: bytes | dict,
    token: str | None = WEBHOOK_TOKEN,
    timeout: float = 10.0,
    path: str = "/alertmanager",
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Poster:
    """POSTs to the webhook over one kept-alive connection (reconnecting when the bot closes
    it, as it does after a refusal)."""

    def __init__(self, base: str, token: str | None = WEBHOOK_TOKEN, path: str = "/alertmanager"):
        parts = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        self.path = path
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def post(self, body: bytes | dict) -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.connection.request("POST", self.path, data, self.headers)
                response = self.connection.getresponse()
                text = response.read().decode()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                return response.status, text
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def bot_env(
    tmp_path: Path,
    telegram_url: str,
    settings: dict | None = None,
    prometheus: str = NOWHERE,
    alertmanager: str = NOWHERE,
    port: int = 0,
) -> dict[str, str]:
    """Environment for a bot; settings are merged over FAST_YAML into its YAML file."""
    merged = {key: dict(value) for key, value in FAST_YAML.items()}
    for key, value in (settings or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    config_path = tmp_path / "bot.yml"
    config_path.write_text(yaml.safe_dump(merged))
    return {
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_CHAT_ID": str(CHAT),
        "TELEGRAM_API_URL": telegram_url,
        "ALERT_BOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "ALERT_BOT_LISTEN": f"127.0.0.1:{port}",
        "ALERT_BOT_DB": str(tmp_path / "bot.db"),
        "PROMETHEUS_URL": prometheus,
        "ALERTMANAGER_URL": alertmanager,
        "GRAFANA_URL": "http://grafana.example:3000",
        "ALERT_BOT_CONFIG": str(config_path),
    }


@contextlib.contextmanager
def running_bot(env: dict[str, str], run_updates: bool = True) -> Iterator[tuple[BotApp, str]]:
    """The bot in this process, built exactly as the command line builds it."""
    config = load_config(env)
    configure_api(config.telegram_api_url, request_timeout=5)
    store = Store(config.db_path)
    app = BotApp(
        config,
        TelegramClient(config.telegram_token),
        PrometheusClient(config.prometheus_url, timeout=5),
        AlertmanagerClient(config.alertmanager_url, timeout=5),
        store,
        run_updates=run_updates,
    )
    app.start()
    try:
        yield app, f"http://127.0.0.1:{app.port}"
    finally:
        app.stop()
        store.close()


def webhook_bot(
    tmp_path: Path, telegram_url: str, settings: dict | None = None
) -> contextlib.AbstractContextManager[tuple[BotApp, str]]:
    """The bot taking the webhook and delivering, with no chat polling: running_bot of
    bot_env(tmp_path, telegram_url, settings)."""
    return running_bot(bot_env(tmp_path, telegram_url, settings), run_updates=False)


@contextlib.contextmanager
def bot_process(env: dict[str, str]) -> Iterator[tuple[ManagedProcess, str]]:
    """`python -m alert_bot` as a real child process (env must name a fixed free port)."""
    port = env["ALERT_BOT_LISTEN"].rsplit(":", 1)[1]
    proc = ManagedProcess([sys.executable, "-m", "alert_bot"], env=env)
    base = f"http://127.0.0.1:{port}"
    with stopped_after(proc, base + "/healthz", "bot", 30):
        yield proc, base


def metric_value(base: str, name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(base + "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return sample.value
    raise KeyError(name)


# --- what a real Prometheus holds ---------------------------------------------------------


def prometheus_has(base: str, expr: str) -> bool:
    status, body = http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return status == 200 and bool(json.loads(body)["data"]["result"])


def wait_prometheus_has(base: str, expr: str, timeout: float = 60) -> None:
    wait_until(
        lambda: prometheus_has(base, expr), timeout=timeout, what=f"Prometheus to have {expr}"
    )


@contextlib.contextmanager
def running_chat_bot(
    tmp_path: Path, telegram, services: dict, settings: dict | None = None
) -> Iterator[tuple[BotApp, str]]:
    """The bot in-process against ``services``' Prometheus and Alertmanager, once its command
    menu is set. Chat tests hold many short conversations: a faster chat limit on both sides
    (the fake Telegram's and the bot's) keeps them quick. ``settings`` go into its YAML."""
    from tests.alert_bot.fake_telegram import FloodRules

    telegram.flood = FloodRules(per_chat=(20, 1.0))
    env = bot_env(
        tmp_path,
        telegram.url,
        {"rate_limits": {"per_chat_messages": 20, "per_chat_window": "1s"}, **(settings or {})},
        prometheus=services["prometheus"],
        alertmanager=services["alertmanager"],
    )
    with running_bot(env) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        yield app, base


def alertmanager_api(services: dict, path: str, body: object | None = None, method: str = "GET"):
    """One call to the Alertmanager of ``services`` (JSON in and out; None for an empty answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        services["alertmanager"] + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def needs_rig_services() -> pytest.MarkDecorator:
    """Skips where the real Prometheus and Alertmanager of running_rig_services are missing."""

    return pytest.mark.skipif(
        not (have_binary("prometheus") and have_binary("prometheus-alertmanager")),
        reason="tests/run.sh installs Debian's prometheus and prometheus-alertmanager",
    )


@contextlib.contextmanager
def running_scraped_rig(
    tmp: Path, scenario: Path, *wait_for: str, evaluate: bool = False
) -> Iterator[str]:
    """The exporter on the scenario file, as rig1, scraped every second by a real Prometheus
    (when ``evaluate``, evaluating the shipped GPU rules every second too: the thresholds they
    record mark a hot card in /status); yields Prometheus's URL once it has each of the
    ``wait_for`` expressions."""
    from tests.servers import running_prometheus
    from tests.support import running_exporter

    with running_exporter(scenario) as (_, exporter_url):
        target = exporter_url.removeprefix("http://")
        config = (
            "global:\n  scrape_interval: 1s\n"
            + ("  evaluation_interval: 1s\n" if evaluate else "")
            + (f"rule_files: ['{GPU_RULES}']\n" if evaluate else "")
            + "scrape_configs:\n  - job_name: rigwatch\n    static_configs:\n"
            f"      - targets: ['{target}']\n        labels: {{rig: rig1}}\n"
        )
        with running_prometheus(tmp, config) as prometheus:
            for expr in wait_for:
                wait_prometheus_has(prometheus, expr)
            yield prometheus


@contextlib.contextmanager
def running_rig_services(
    tmp: Path, devices: list[dict], *wait_for: str, evaluate: bool = False
) -> Iterator[dict]:
    """The exporter on one rig (rig1) of ``devices`` scraped every second by a real Prometheus
    (evaluating every second too when ``evaluate``), and an Alertmanager; yields their URLs
    once Prometheus has each of the ``wait_for`` expressions."""
    from tests.servers import running_alertmanager
    from tests.support import build_fake_nvml, make_scenario

    build_fake_nvml()
    scenario = tmp / "scenario.json"
    scenario.write_text(json.dumps(make_scenario(devices=devices)))
    with (
        running_scraped_rig(tmp, scenario, *wait_for, evaluate=evaluate) as prometheus,
        running_alertmanager(tmp) as am,
    ):
        yield {"prometheus": prometheus, "alertmanager": am}


@contextlib.contextmanager
def two_card_rig(tmp: Path, evaluate: bool = False) -> Iterator[dict]:
    """running_rig_services with the chat tests' rig: two simulated cards, card 0 hot (83 °C),
    card 1 cool (41 °C), once Prometheus has their temperatures and the host's CPU rate."""
    from tests.support import make_device

    devices = [make_device(0, temperature_c=83), make_device(1, temperature_c=41)]
    with running_rig_services(
        tmp,
        devices,
        "rigwatch_gpu_temperature_celsius",
        'rate(rigwatch_host_cpu_seconds_total{mode="idle"}[2m])',
        evaluate=evaluate,
    ) as services:
        yield services
