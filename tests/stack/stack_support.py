"""Helpers for the stack tests: the shipped files, test overlays of them, and the real
Prometheus, Alertmanager and a webhook receiver (standing in for the alert bot) on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.servers import running_alertmanager, running_prometheus
from tests.support import (
    REPO,
    InBackground,
    free_port,
    http_get,
    make_device,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

PROMETHEUS_DIR = REPO / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"
GRAFANA_DIR = REPO / "grafana"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# Metrics of Prometheus and Alertmanager themselves that rules and dashboards may name.
# The end-to-end test checks the real servers export each of them.
SERVER_OWN_METRICS = {
    "up",
    "ALERTS",
    "prometheus_rule_evaluation_failures_total",
    "prometheus_sd_file_read_errors_total",
    "alertmanager_notifications_failed_total",
}

_METRIC_IN_DOC = re.compile(r"^\|\s*(rigwatch_[a-z0-9_]+)\s*\|\s*(\w+)\s*\|", re.MULTILINE)
_METRIC_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_:])(rigwatch_[a-z0-9_]+|prometheus_[a-z0-9_]+|alertmanager_[a-z0-9_]+"
    r"|ALERTS|up(?=\s*[{\[=]))"
)


def run_tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run promtool/amtool/docker-compose from the repository root, capturing text output."""
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def documented_metrics() -> set[str]:
    """Every series name docs/metrics.md, docs/bot-metrics.md and the push door's table in
    docs/push.md promise (histograms expanded)."""
    names: set[str] = set()
    for doc in ("metrics.md", "bot-metrics.md", "push.md"):
        for name, kind in _METRIC_IN_DOC.findall((REPO / "docs" / doc).read_text()):
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def metric_names_in(text: str) -> set[str]:
    """Metric names a PromQL expression (or a file of them) refers to."""
    return set(_METRIC_TOKEN.findall(text))


def load_rule_groups() -> list[dict]:
    groups = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def alerting_rules() -> list[dict]:
    return [rule for group in load_rule_groups() for rule in group["rules"] if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for g in load_rule_groups() for rule in g["rules"] if "record" in rule}


def dashboard_queries(dashboard: dict) -> list[tuple[str, str, bool]]:
    """(panel title, expr, instant) for every query of every panel, rows included."""
    found = []

    def visit(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel.get("title", ""), target["expr"], bool(target.get("instant"))))
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    return found


def substitute_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """A dashboard query as Grafana would send it, with every variable at "All"."""
    replacements = {
        "$__rate_interval": "10s",
        "$__range": "1m",
        "$__range_s": "60",
        "$__interval": "1s",
        "$job": ".*",
        "$rig": ".*",
        "$instance": ".*",
        "$gpu": ".*",
    }
    replacements.update(values or {})
    # Longest names first, so $__rate_interval is not read as $__range or $__interval.
    for name in sorted(replacements, key=len, reverse=True):
        expr = expr.replace(name, replacements[name])
    assert "$" not in expr, f"unknown variable left in {expr!r}"
    return expr


# --- test overlays of the shipped configuration --------------------------------------------


def write_short_rules(dest: Path, for_duration: str = "1s") -> list[Path]:
    """The shipped rule files with every `for:` shortened; nothing else changes."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in RULE_FILES:
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = for_duration
        out = dest / path.name
        out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        written.append(out)
    return written


def write_targets(path: Path, rigs: dict[str, str]) -> None:
    """A file_sd targets file like prometheus/targets/rigs.yml: rig name → host:port."""
    entries = [{"targets": [addr], "labels": {"rig": rig}} for rig, addr in rigs.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(entries))
    tmp.replace(path)


def write_prometheus_overlay(
    workdir: Path,
    prometheus_port: int,
    alertmanager_port: int | None,
    bot_address: str | None = None,
) -> Path:
    """prometheus/prometheus.yml with 1 s intervals, loopback addresses and short `for:`s."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    )
    write_short_rules(workdir / "rules")
    (workdir / "targets").mkdir(exist_ok=True)
    config["rule_files"] = [str(workdir / "rules" / "*.yml")]
    if alertmanager_port is None:
        config.pop("alerting", None)
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{alertmanager_port}"]}
        ]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "rigwatch":
            job["file_sd_configs"] = [
                {"files": [str(workdir / "targets" / "*.yml")], "refresh_interval": "1s"}
            ]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
        elif job["job_name"] == "alertmanager":
            if alertmanager_port is None:
                continue
            job["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
        elif job["job_name"] == "alert-bot":
            if bot_address is None:
                continue  # the webhook receiver stands in for the bot and has no metrics
            job["static_configs"] = [{"targets": [bot_address]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


GROUP_WAIT_S = 1  # the shipped routes' waits, shortened for the tests
GROUP_INTERVAL_S = 2


def write_alertmanager_overlay(workdir: Path, webhook_url: str, token: str) -> Path:
    """prometheus/alertmanager.yml with the receiver URL and token file swapped for the test's
    and every wait shortened; routes, grouping and inhibit rules stay as shipped."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    token_file = workdir / "webhook_token"
    token_file.write_text(token)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)

    def shorten(route: dict) -> None:
        for key, value in (
            ("group_wait", f"{GROUP_WAIT_S}s"),
            ("group_interval", f"{GROUP_INTERVAL_S}s"),
        ):
            if key in route:
                route[key] = value
        if "repeat_interval" in route:
            route["repeat_interval"] = "4s" if route.get("receiver") == "bot-watchdog" else "1h"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- real servers ---------------------------------------------------------------------------


def query(base: str, promql: str) -> list[dict]:
    """Instant query; raises with Prometheus's error text when the query is rejected."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    status, body = http_get(url, timeout=10)
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise AssertionError(f"Prometheus rejected {promql!r}: {body}")
    return data["data"]["result"]


@contextlib.contextmanager
def running_shipped_prometheus(
    workdir: Path, alertmanager_port: int | None, bot_address: str | None = None
) -> Iterator[str]:
    """Debian's `prometheus` with the test overlay of the shipped configuration; yields its
    base URL."""
    port = free_port()
    config = write_prometheus_overlay(workdir, port, alertmanager_port, bot_address)
    # Alerts evaluated before Alertmanager is discovered are dropped and only resent after
    # this delay (1 m by default): keep it at the evaluation interval.
    with running_prometheus(workdir, config, ("--rules.alert.resend-delay=1s",), port=port) as base:
        yield base


@contextlib.contextmanager
def running_shipped_alertmanager(workdir: Path, webhook_url: str, token: str) -> Iterator[str]:
    """Debian's `prometheus-alertmanager` with the shipped routing; yields its base URL."""
    config = write_alertmanager_overlay(workdir, webhook_url, token)
    with running_alertmanager(workdir, config) as base:
        yield base


class WebhookReceiver(InBackground):
    """A real HTTP server recording Alertmanager's webhook posts, in place of the alert bot."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.posts: list[dict] = []
        self.rejected = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {receiver.token}":
                    with receiver._lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.posts.append({"path": self.path, "payload": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alertmanager"

    def run(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str, status: str | None = None) -> list[tuple[dict, dict]]:
        """(payload, alert) pairs received so far for that alert name (and status)."""
        with self._lock:
            posts = list(self.posts)
        found = []
        for post in posts:
            for alert in post["payload"]["alerts"]:
                if alert["labels"].get("alertname") != alertname:
                    continue
                if status is None or alert["status"] == status:
                    found.append((post["payload"], alert))
        return found


def fake_sysfs(root: Path, cards: int = 2) -> Path:
    """A sysfs tree with one hwmon chip (a CPU package sensor with high and critical marks),
    so host temperature queries have data on machines without sensors, and the PCI bus of the
    simulated cards of make_scenario(cards) (up to 9; links and AER counters)."""
    from tests.exporter.sysfs_tree import SysfsTree

    bus = SysfsTree(root)
    for number in range(1, cards + 1):
        if not (bus.devices / f"0000:0{number}:00.0").exists():
            bus.add_function(f"0000:0{number}:00.0", port=f"0000:00:01.{number}")
    chip = root / "class" / "hwmon" / "hwmon0"
    chip.mkdir(parents=True, exist_ok=True)
    for name, text in {
        "name": "coretemp",
        "temp1_label": "Package id 0",
        "temp1_input": "52000",
        "temp1_max": "90000",
        "temp1_crit": "100000",
    }.items():
        (chip / name).write_text(text + "\n")
    return root


def rich_scenario() -> dict:
    """Card 0 reports everything (datacenter-like); card 1 is a consumer card lacking
    memory temperature, ECC and row remapping."""
    scenario = make_scenario(2)
    scenario["devices"][0] = make_device(
        0,
        name="NVIDIA H100 80GB HBM3",
        memory_temperature_c=60,
        # Hopper's profiling metrics, for the GPU detail dashboard's GPM row.
        gpm={
            "graphics_util": 98.0,
            "sm_util": 90.0,
            "sm_occupancy": 20.0,
            "any_tensor_util": 2.0,
            "hmma_tensor_util": 2.0,
            "fp32_util": 45.0,
            "dram_bw_util": 30.0,
            "pcie_tx_per_sec": 5.0,
            "pcie_rx_per_sec": 12.0,
            "nvlink_total_rx_per_sec": 0.0,
            "nvlink_total_tx_per_sec": 0.0,
        },
        temperature_memory_max_c=95,
        ecc={
            "corrected_volatile": 3,
            "uncorrected_volatile": 0,
            "corrected_aggregate": 10,
            "uncorrected_aggregate": 0,
        },
        remapped_rows={"correctable": 1, "uncorrectable": 0, "pending": 0, "failure": 0},
        processes=[{"pid": os.getpid(), "used_memory_bytes": 2147483648, "sm_util_percent": 40}],
        xid_events=[13],
        clock_event_reasons=0x4,
    )
    return scenario


def start_rich_rigs(
    stack: contextlib.ExitStack, workdir: Path, count: int, name: str
) -> dict[str, str]:
    """``count`` exporters (PCIe throughput on) on rich_scenario() and one fake sysfs with a
    spinning fan, entered into ``stack``: rig name (``name.format(1..count)``) -> host:port."""
    scenario_path = workdir / "scenario.json"
    write_scenario(scenario_path, rich_scenario())
    sysfs = fake_sysfs(workdir / "sys")
    (sysfs / "class" / "hwmon" / "hwmon0" / "fan1_input").write_text("1200\n")
    rigs = {}
    for number in range(1, count + 1):
        _, base = stack.enter_context(
            running_exporter(scenario_path, f"--path.sysfs={sysfs}", "--collector.pcie_throughput")
        )
        rigs[name.format(number)] = base.removeprefix("http://")
    return rigs


@contextlib.contextmanager
def rich_rigs_workdir(
    tmp_path_factory, label: str, count: int, name: str
) -> Iterator[tuple[contextlib.ExitStack, Path, dict[str, str]]]:
    """A fresh working folder and start_rich_rigs() in it, entered into an ExitStack the caller
    adds its own servers to; everything stopped and the folder removed afterwards."""
    workdir = tmp_path_factory.mktemp(label)
    try:
        with contextlib.ExitStack() as stack:
            yield stack, workdir, start_rich_rigs(stack, workdir, count, name)
    finally:
        remove_tree(workdir)


def wait_rigs_scraped(base: str, count: int, what: str) -> None:
    """Until ``base`` has CPU rates (two scrapes at least) from ``count`` rigs."""

    def rigs_with_rates() -> bool:
        rate = 'rate(rigwatch_host_cpu_seconds_total{mode="idle"}[10s])'
        result = query(base, f"count(count by (rig) ({rate}))")
        return bool(result) and result[0]["value"][1] == str(count)

    wait_until(rigs_with_rates, timeout=60, interval=0.5, what=what)


def load_dashboard(name: str) -> dict:
    """The generated dashboard file of that name, parsed."""
    return json.loads(next(p for p in DASHBOARD_FILES if p.name == name).read_text())


def assert_dashboard_answers(base: str, name: str) -> None:
    """Every query of dashboard ``name`` is accepted by ``base`` and has data (ALERTS queries
    may be empty), and every query variable has values."""
    dashboard = load_dashboard(name)
    for title, expr, _ in dashboard_queries(dashboard):
        result = query(base, substitute_variables(expr))
        if "ALERTS" not in expr:
            assert result, f"{name} / {title}: no data for {expr}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = substitute_variables(variable["definition"])
        selector, label = definition.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
        result = query(base, f"group by ({label.strip()}) ({selector})")
        assert result, f"variable {variable['name']} has no values"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def post_alerts(alertmanager: str, alerts: list[dict]) -> None:
    """Push alerts straight into Alertmanager through its v2 API (as Prometheus does)."""
    request = urllib.request.Request(
        alertmanager + "/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def section_text(heading: str) -> str:
    """One section of docs/push.md (up to the next heading)."""
    text = (REPO / "docs" / "push.md").read_text()
    section = text[text.index(heading) + len(heading) :]
    return section[: re.search(r"\n##+ ", section).start()]  # a block's "# " is no heading


def section_blocks(heading: str) -> list[str]:
    """The fenced blocks of one section of docs/push.md."""
    return re.findall(r"```\w*\n(.*?)```", section_text(heading), re.DOTALL)
