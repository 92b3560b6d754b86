"""The stack as README starts it: the shipped docker-compose.yml with the documented no-GPU
variant, the project's Dockerfiles, in a private Docker engine on stand-in base images
(tests/containers/). Grafana is left out: no image of it can be had here.

The tests below run in order on one stack: health, targets, rules, the external URL with a
path, the Watchdog, the host's series, an edited prometheus.yml, an alert to Telegram, and then
queue, silences and TSDB across `restart` and `down`/`up`."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests.alert_bot.fake_telegram import FakeTelegram
from tests.stack import engine
from tests.support import REPO, free_port, http_get, wait_until

PROJECT = "rigwatchtest"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.no-gpu.yml", "docker-compose.override.yml"]
# Grafana is not started: no image or package of it is reachable from here.
SERVICES = ["exporter-host", "prometheus", "alertmanager", "alert-bot"]
TELEGRAM_TOKEN = "123456:compose-test-token"
DEFAULT_CHAT = -1001234
ROUTED_CHAT = -1009999
WEBHOOK_TOKEN = "compose-webhook-secret"
# The stack is published on free loopback ports through the compose file's *_PORT variables,
# so the test passes on a rig where rigwatch already listens on 10735, 9090, 9093 and 10736.
HOST_PORTS = {
    name: str(free_port())
    for name in ("EXPORTER_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT", "BOT_PORT")
}
PROMETHEUS = f"http://127.0.0.1:{HOST_PORTS['PROMETHEUS_PORT']}"
ALERTMANAGER = f"http://127.0.0.1:{HOST_PORTS['ALERTMANAGER_PORT']}"
BOT = f"http://127.0.0.1:{HOST_PORTS['BOT_PORT']}"
EXPORTER = f"http://127.0.0.1:{HOST_PORTS['EXPORTER_PORT']}"
# Point 1: external URLs with a path, as behind a reverse proxy.
PROMETHEUS_EXTERNAL_URL = "http://rig.lan/prometheus/"
ALERTMANAGER_EXTERNAL_URL = "http://rig.lan/alertmanager/"
REQUIRED = engine.REQUIRED
engine.skip_module_unless_runnable("compose test")


def log(message: str) -> None:
    print(f"[compose {time.strftime('%H:%M:%S')}] {message}", flush=True)


class GatewayTelegram(FakeTelegram):
    """The fake Telegram listening on the docker bridge's address, where containers reach the
    host (and nothing outside this machine can)."""

    def __init__(self, token: str, address: str):
        super().__init__(token)
        self.server.server_close()
        self.server = type(self.server)((address, 0), self._handler_class())
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client: None
        self.address = address

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.server.server_address[1]}"


@dataclass
class Stack(engine.ComposeProject):
    telegram: GatewayTelegram | None = None

    def wait_healthy(self, timeout: float = 120) -> dict[str, str]:
        def healthy():
            states = {
                name: info["State"].get("Health", {}).get("Status", info["State"]["Status"])
                for name, info in self.containers().items()
            }
            return states if all(states.get(s) == "healthy" for s in SERVICES) else None

        try:
            return wait_until(healthy, timeout=timeout, interval=2, what="every service healthy")
        except TimeoutError:
            raise AssertionError("not every service became healthy:\n" + self.describe()) from None


def api(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith(("{", "[")) else text


def _write_env(checkout: Path, telegram_url: str) -> None:
    """.env.example filled in as docs/stack.md says."""
    engine.write_env(
        checkout,
        {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_CHAT_ID": str(DEFAULT_CHAT),
            "TELEGRAM_API_URL": telegram_url,
            "ALERT_BOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "GRAFANA_ADMIN_PASSWORD": "not-started-here",
            "PROMETHEUS_EXTERNAL_URL": PROMETHEUS_EXTERNAL_URL,
            "ALERTMANAGER_EXTERNAL_URL": ALERTMANAGER_EXTERNAL_URL,
        },
    )


def _prepare_checkout(checkout: Path, telegram_url: str) -> None:
    engine.copy_checkout(checkout)
    _write_env(checkout, telegram_url)
    # What a developer's checkout also holds; .dockerignore must keep it out of build contexts.
    (checkout / ".venv").mkdir()
    (checkout / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    # Point 5: the bot's YAML through the example override, as docs/alert-bot.md says.
    shutil.copy(
        checkout / "deploy" / "compose" / "alert-bot-config.yml",
        checkout / "docker-compose.override.yml",
    )
    config = checkout / "bot-config"
    config.mkdir()
    (config / "alert-bot.yml").write_text(
        yaml.safe_dump(
            {
                "routes": [{"match": {"alertname": "ComposeTestAlert"}, "chat_id": ROUTED_CHAT}],
                "watchdog": {"enabled": True, "timeout": "10m"},
            }
        )
    )
    config.chmod(0o755)
    (config / "alert-bot.yml").chmod(0o644)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    started = time.monotonic()
    with engine.engine_with_stand_ins("compose test", log, REQUIRED) as docker:
        log(f"stand-in images ready after {time.monotonic() - started:.0f} s")
        telegram = GatewayTelegram(TELEGRAM_TOKEN, docker.gateway()).start()
        checkout = tmp_path_factory.mktemp("checkout")
        _prepare_checkout(checkout, telegram.url)
        stack = Stack(docker, checkout, PROJECT, COMPOSE_FILES, HOST_PORTS, telegram)
        log(f"fake Telegram at {telegram.url}; Grafana is not started (no image of it here)")
        try:
            stack.compose("up", "-d", "--build", *SERVICES, timeout=600)
            log(f"up -d --build done after {time.monotonic() - started:.0f} s")
            yield stack
        finally:
            try:
                stack.compose("down", "-v", "--rmi", "all", timeout=180)
            finally:
                telegram.stop()
                log(f"engine stopped and removed after {time.monotonic() - started:.0f} s")


def _series(text: str, name: str) -> dict[str, float]:
    """{label part: value} of one metric in Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name) :]] = float(value)
    return found


def test_every_service_becomes_healthy(stack):
    states = stack.wait_healthy()
    log("health: " + ", ".join(f"{name} {state}" for name, state in sorted(states.items())))
    assert set(states) == set(SERVICES), "the GPU exporter and Grafana must not be started"
    for name, info in stack.containers().items():
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", name


def test_the_images_were_built_from_a_clean_context(stack):
    """Point 7: .env and .venv never reach the engine; images carry the project's version."""
    version = next(
        line.split('"')[1]
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )
    images = {info["Config"]["Image"] for info in stack.containers().values()}
    assert {f"rigwatch-exporter:{version}", f"rigwatch-bot:{version}"} <= images
    probe = stack.engine.docker(
        "build", "-q", "-f", "-", "-t", "rigwatch-test/context-probe", str(stack.checkout),
        input=b"FROM python:3.12-slim\nCOPY . /context\nRUN find /context > /files\n",
        timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0
    listing = stack.engine.text(
        "run", "--rm", "--entrypoint", "cat", "rigwatch-test/context-probe", "/files"
    ).split()
    stack.engine.docker("rmi", "rigwatch-test/context-probe")
    assert "/context/exporter/cli.py" in listing and "/context/alert_bot/cli.py" in listing
    top = {path.split("/")[2] for path in listing if path.count("/") >= 2}
    assert top & {".env", ".venv", ".git", "bot-config"} == set()
    assert ".env.example" in top


def test_prometheus_scrapes_every_target(stack):
    def all_up():
        targets = api(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        jobs = {t["labels"]["job"]: t["health"] for t in targets}
        return jobs if len(jobs) == 4 and set(jobs.values()) == {"up"} else None

    jobs = wait_until(all_up, timeout=60, interval=2, what="every target up")
    log(f"targets: {jobs}")
    assert set(jobs) == {"rigwatch", "prometheus", "alertmanager", "alert-bot"}
    managers = api(f"{PROMETHEUS}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == ["http://alertmanager:9093/api/v2/alerts"]


def test_the_shipped_rules_are_loaded(stack):
    shipped = 0
    for path in (REPO / "prometheus" / "rules").glob("*.yml"):
        shipped += sum(len(g["rules"]) for g in yaml.safe_load(path.read_text())["groups"])
    groups = api(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == shipped
    assert all(rule["health"] in ("ok", "unknown") for rule in rules)
    log(f"rules loaded: {len(rules)} in {len(groups)} groups")


def test_an_external_url_with_a_path_keeps_routes_at_the_root(stack):
    """Point 1: health checks pass (above), and links in alerts carry the external URL."""
    flags = api(f"{PROMETHEUS}/api/v1/status/flags")["data"]
    assert flags["web.external-url"] == PROMETHEUS_EXTERNAL_URL
    assert flags["web.route-prefix"] == "/"

    def watchdog():
        alerts = api(f"{ALERTMANAGER}/api/v2/alerts?filter=alertname%3DWatchdog")
        return alerts[0] if alerts else None

    alert = wait_until(watchdog, timeout=60, interval=2, what="Watchdog in Alertmanager")
    assert alert["generatorURL"].startswith(PROMETHEUS_EXTERNAL_URL + "graph?")
    assert http_get(f"{ALERTMANAGER}/-/healthy")[0] == 200


def test_the_watchdog_reaches_the_bot(stack):
    def seen():
        metrics = http_get(f"{BOT}/metrics")[1]
        value = _series(metrics, "rigwatch_bot_watchdog_last_seen_timestamp_seconds")
        return value if value and max(value.values()) > 0 else None

    wait_until(seen, timeout=90, interval=2, what="the bot's Watchdog timestamp")
    log("Watchdog reached the bot (with the webhook token)")


def test_the_exporter_reports_the_hosts_series(stack):
    """The read-only host mounts and host PIDs work: values are this machine's, not the
    container's."""
    metrics = http_get(f"{EXPORTER}/metrics")[1]
    memory = _series(metrics, "rigwatch_host_memory_total_bytes")
    assert list(memory.values()) == [float(psutil.virtual_memory().total)]
    boot = list(_series(metrics, "rigwatch_host_boot_time_seconds").values())
    assert len(boot) == 1 and abs(boot[0] - psutil.boot_time()) < 2
    devices = {
        key.split('device="')[1].split('"')[0]
        for key in _series(metrics, "rigwatch_host_network_receive_bytes_total")
    }
    # The docker bridge exists in the host's network namespace, not in the container's.
    assert (
        stack.engine.inspect("network", "bridge")["Options"]["com.docker.network.bridge.name"]
        in devices
    )
    sizes = _series(metrics, "rigwatch_host_filesystem_size_bytes")
    root = [v for k, v in sizes.items() if 'mountpoint="/"' in k]
    statvfs = os.statvfs("/")
    assert root == [float(statvfs.f_blocks * statvfs.f_frsize)]
    assert "rigwatch_gpu_info" not in metrics and "rigwatch_nvml_up" not in metrics
    # Point 3: the host's /etc/passwd, so GPU processes' owners have their names.
    exporter_id = stack.containers()["exporter-host"]["Id"]
    passwd = stack.engine.text("exec", exporter_id, "cat", "/etc/passwd")
    assert passwd == Path("/etc/passwd").read_text()
    log(f"exporter: host memory, boot time, {len(devices)} interfaces, / and passwd are the host's")


def _replace_like_an_editor(path: Path, text: str) -> None:
    """Write a new file and rename it over the old one (vim, VS Code, sed -i do this)."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.chmod(new, 0o644)
    os.replace(new, path)


def test_an_edited_prometheus_yml_is_reloaded_and_its_alert_reaches_telegram(stack):
    """Point 2, then the whole path: Prometheus -> Alertmanager -> bot -> Telegram."""
    config_dir = stack.checkout / "prometheus"
    (config_dir / "compose-test-rules.yml").write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "compose-test",
                        "rules": [
                            {
                                "alert": "ComposeTestAlert",
                                "expr": 'up{job="rigwatch"} == 1',
                                "labels": {"severity": "critical"},
                                "annotations": {
                                    "summary": "Compose test alert on {{ $labels.rig }}",
                                    "description": "Raised by the compose test.",
                                },
                            }
                        ],
                    }
                ]
            }
        )
    )
    (config_dir / "compose-test-rules.yml").chmod(0o644)
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    config["rule_files"].append("compose-test-rules.yml")
    _replace_like_an_editor(config_dir / "prometheus.yml", yaml.safe_dump(config))
    request = urllib.request.Request(f"{PROMETHEUS}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200

    def loaded():
        groups = api(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
        return any(g["name"] == "compose-test" for g in groups)

    wait_until(loaded, timeout=20, interval=1, what="the edited prometheus.yml's rule file")
    log("edited prometheus.yml (replaced by rename) picked up by /-/reload")

    def delivered():
        calls = [
            c
            for c in stack.telegram.sent(ROUTED_CHAT)
            if "ComposeTestAlert" in c.params.get("caption", c.params.get("text", ""))
        ]
        # The message first, then the chart of its expression (a critical alert has one).
        return calls if {c.method for c in calls} == {"sendMessage", "sendPhoto"} else None

    try:
        calls = wait_until(delivered, timeout=120, interval=2, what="alert and chart")
    except TimeoutError:
        arrived = [(c.method, c.params.get("chat_id")) for c in stack.telegram.sent()]
        raise AssertionError(f"ComposeTestAlert and its chart did not arrive: {arrived}") from None
    log(f"ComposeTestAlert reached the fake Telegram in chat {ROUTED_CHAT}, text and chart")
    photo = next(c for c in calls if c.method == "sendPhoto")
    assert photo.files["photo"].startswith(b"\x89PNG")


def _queue_behind_a_telegram_outage(stack: Stack) -> None:
    """A notification the bot accepted while Telegram is down: it waits in the queue."""
    stack.telegram.go_down(3600)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "bot-critical",
        "groupKey": '{}:{alertname="ComposeQueued"}',
        "groupLabels": {"alertname": "ComposeQueued"},
        "commonLabels": {"alertname": "ComposeQueued", "severity": "critical", "rig": "rig1"},
        "commonAnnotations": {"summary": "Queued across restarts"},
        "externalURL": ALERTMANAGER_EXTERNAL_URL,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ComposeQueued", "severity": "critical", "rig": "rig1"},
                "annotations": {"summary": "Queued across restarts"},
                "startsAt": now,
                "fingerprint": "c0ffee",
            }
        ],
    }
    api(
        f"{BOT}/alertmanager",
        method="POST",
        body=payload,
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    )


def _queued_delivered(stack: Stack) -> bool:
    return any(
        "ComposeQueued" in c.params.get("text", c.params.get("caption", ""))
        for c in stack.telegram.sent(DEFAULT_CHAT)
    )


def _delivery_failures() -> float:
    """The bot's failed send attempts so far, all reasons."""
    metrics = http_get(f"{BOT}/metrics")[1]
    return sum(_series(metrics, "rigwatch_bot_delivery_failures_total").values())


def _samples_before(stack: Stack, at: float) -> int:
    result = api(
        f"{PROMETHEUS}/api/v1/query?query=count_over_time(up%7Bjob%3D%22prometheus%22%7D%5B1h%5D)"
        f"&time={at}"
    )["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def test_queue_silences_and_tsdb_survive_restart_and_down_up(stack):
    silence = api(
        f"{ALERTMANAGER}/api/v2/silences",
        method="POST",
        body={
            "matchers": [{"name": "alertname", "value": "HostRebooted", "isRegex": False}],
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400)),
            "createdBy": "compose test",
            "comment": "kept across restarts",
        },
    )["silenceID"]
    failed_before = _delivery_failures()
    _queue_behind_a_telegram_outage(stack)
    mark = time.time()
    samples = _samples_before(stack, mark)
    assert samples > 0

    # The bot has tried to deliver it and failed (Telegram is down): it waits in the queue.
    wait_until(
        lambda: _delivery_failures() > failed_before,
        timeout=60,
        interval=1,
        what="a failed delivery try",
    )
    assert not _queued_delivered(stack)

    for step in (("restart",), ("down",), ("up", "-d", *SERVICES)):
        stack.compose(*step, timeout=300)
        if step[0] == "down":
            assert stack.containers() == {}
            continue
        stack.wait_healthy()
        log(f"after `{' '.join(step[:2])}`: every service healthy again")
        silences = {s["id"]: s for s in api(f"{ALERTMANAGER}/api/v2/silences")}
        assert silences[silence]["status"]["state"] == "active"
        assert _samples_before(stack, mark) == samples, "samples from before are gone"
        assert not _queued_delivered(stack), "Telegram is still down"
    log(f"silence {silence[:8]} and {samples} samples from before kept; queue still waiting")

    stack.telegram.down_until = 0.0
    wait_until(
        lambda: _queued_delivered(stack),
        timeout=120,
        interval=2,
        what="the queued notification delivered after the restarts",
    )
    log("the notification queued before `restart` and `down`/`up` reached Telegram")
