"""A resolved notice says what the alert's value is now, read from a real Prometheus with the
shipped rule's own expression (temperature, throttling, card memory, a host's disk); without a
Prometheus that answers, the notice still goes out, only without that line."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from alert_bot.alerts.current import CurrentValues, alert_series
from alert_bot.alerts.model import Alert
from alert_bot.upstream.prometheus import PrometheusClient
from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT, running_rig_services
from tests.support import REPO, http_get, make_device, wait_until

pytestmark = botkit.needs_rig_services()
GIB = 1 << 30


def _shipped_expr(name: str) -> str:
    for path in (REPO / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    return rule["expr"]
    raise KeyError(name)


def _series(prometheus: str, expr: str) -> list[dict]:
    status, body = http_get(prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def _resolved(name: str, series_labels: dict[str, str], **extra: str) -> dict:
    """A resolved alert of the shipped rule ``name`` about the series with these labels, as
    Alertmanager sends it (the rule's own labels and the generatorURL Prometheus writes)."""
    labels = {k: v for k, v in series_labels.items() if k not in ("__name__", "rig", "gpu")}
    url = "http://prometheus.example:9090/graph?g0.expr=" + urllib.parse.quote(_shipped_expr(name))
    return botkit.alert(
        name=name,
        status="resolved",
        rig=series_labels.get("rig", "rig1"),
        gpu=series_labels.get("gpu"),
        summary=f"{name} summary while firing",
        generator=url,
        **{**labels, **extra},
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict]:
    """Card 0 cooled to 70 °C, no longer throttling, with 20 of its 24 GiB in use; card 1 at
    41 °C (its value must never stand in for card 0's)."""
    devices = [
        make_device(0, temperature_c=70, clock_event_reasons=0, memory_used_bytes=20 * GIB),
        make_device(1, temperature_c=41),
    ]
    devices[0]["memory_total_bytes"] = 24 * GIB
    with running_rig_services(
        tmp_path_factory.mktemp("resolved-now"),
        devices,
        "rigwatch_gpu_throttle_reason_active",
        "rigwatch_host_filesystem_size_bytes",
    ) as services:
        yield services


def _notice(telegram, home: Path, prometheus: str, resolved: dict) -> str:
    """The text of the notice a fresh bot (its store in home) sends for this resolved alert."""
    home.mkdir(exist_ok=True)
    before = len(telegram.sent(CHAT))
    with botkit.running_bot(botkit.bot_env(home, telegram.url, prometheus=prometheus)) as (_, base):
        assert botkit.post(base, botkit.notification(resolved))[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) > before, what="the resolved notice")
    return telegram.visible_texts(CHAT)[before]


@pytest.mark.parametrize(
    ("name", "metric", "match", "line"),
    [
        ("GpuTemperatureCritical", "rigwatch_gpu_temperature_celsius", {}, "Now: 70 °C"),
        (
            "GpuThermalThrottling",
            "rigwatch_gpu_throttle_reason_active",
            {"reason": "sw_thermal"},
            "Now: active: no",
        ),
        ("GpuMemoryAlmostFull", "rigwatch_gpu_memory_used_bytes", {}, "Now: 83.3 %"),
    ],
)
def test_a_card_notice_says_its_value_now(telegram, tmp_path, services, name, metric, match, line):
    """Card 0's own series of the measured side of the shipped rule, with the chart's unit."""
    selector = ",".join(['gpu="0"', *(f'{k}="{v}"' for k, v in match.items())])
    (series,) = _series(services["prometheus"], f"{metric}{{{selector}}}")
    resolved = _resolved(name, series["metric"], severity="critical")
    text = _notice(telegram, tmp_path, services["prometheus"], resolved)
    assert "RESOLVED" in text and name in text
    assert line in text.splitlines()


def test_a_disk_notice_says_the_share_left_now(telegram, tmp_path, services):
    disks = _series(services["prometheus"], "rigwatch_host_filesystem_size_bytes > 0")
    disk = disks[0]["metric"]
    text = _notice(
        telegram,
        tmp_path,
        services["prometheus"],
        _resolved("HostFilesystemAlmostFull", disk, severity="critical"),
    )
    mount = f'mountpoint="{disk["mountpoint"]}",device="{disk["device"]}"'
    (left,) = _series(
        services["prometheus"],
        f"rigwatch_host_filesystem_avail_bytes{{{mount}}}"
        f" / rigwatch_host_filesystem_size_bytes{{{mount}}}",
    )
    line = next(x for x in text.splitlines() if x.startswith("Now: "))
    shown = float(re.fullmatch(r"Now: ([\d.]+) %", line).group(1))
    assert shown == pytest.approx(float(left["value"][1]) * 100, abs=1.0)


def test_without_prometheus_the_notice_goes_out_without_the_line(telegram, tmp_path):
    labels = {"job": "rigwatch", "instance": "rig1:9835", "gpu": "0", "rig": "rig1"}
    resolved = _resolved("GpuTemperatureCritical", labels, severity="critical")
    text = _notice(telegram, tmp_path, "http://127.0.0.1:9", resolved)
    assert "RESOLVED" in text and "GpuTemperatureCritical" in text
    assert "Now:" not in text


def test_a_value_is_shown_only_for_the_alert_s_own_series():
    cards = [
        {"metric": {"gpu": "0", "instance": "a"}, "value": 70.0},
        {"metric": {"gpu": "1", "instance": "a"}, "value": 41.0},
    ]
    labels = {"alertname": "X", "severity": "critical", "gpu": "1", "instance": "a"}
    assert alert_series(cards, labels)["value"] == 41.0
    assert alert_series(cards, {**labels, "gpu": "7"}) is None  # the card is gone
    assert alert_series(cards, {"alertname": "X", "instance": "a"}) is None  # which one?


class SlowPrometheus(http.server.BaseHTTPRequestHandler):
    """Answers every query with card 0 at 70 °C, a second late; counts what it was asked."""

    asked: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server name
        self.asked.append(self.path)
        time.sleep(1.0)
        body = json.dumps(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {"gpu": "0"}, "value": [0, "70"]}],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_slow_prometheus_is_left_alone_after_one_answer():
    """A backlog of resolved notices waits on at most one slow answer, not one per notice."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        current = CurrentValues(PrometheusClient(f"http://127.0.0.1:{server.server_port}"), 5.0)
        labels = {"job": "rigwatch", "instance": "rig1:9835", "rig": "rig1"}
        first = Alert.from_json(_resolved("GpuTemperatureCritical", {**labels, "gpu": "0"}))
        unit, value = current(first)
        assert (unit.format(value), SlowPrometheus.asked[0][:14]) == ("70 °C", "/api/v1/query?")
        # The same card's other alert would have its value: Prometheus is not asked.
        near = _resolved("GpuTemperatureNearSlowdown", {**labels, "gpu": "0"})
        assert current(Alert.from_json(near)) is None
        assert current(first) == (unit, value)  # asked once: the answer is kept
        assert len(SlowPrometheus.asked) == 1
    finally:
        server.shutdown()
        server.server_close()
