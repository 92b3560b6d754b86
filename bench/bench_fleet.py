"""Fleet benchmark: Prometheus against VictoriaMetrics + vmalert as the centre for N rigs.

One run prints one markdown table to stdout (progress goes to stderr). N simulated rigs come
from one real exporter on the simulated NVML (8 cards): a small server in this process scrapes
it once per interval and serves that body to every rig's target, and each target carries its
own `rig` and `instance` labels, as relabelling one exporter's scrape into many rigs would.
Each engine runs alone, with the shipped rule files, at the shipped 15 s intervals.

    python3 bench/bench_fleet.py              # N = 10, 50, 200, then wear at 200; about 10 minutes
    python3 bench/bench_fleet.py --rigs 10 50 --window 30

Measured per engine and N, from one interval after every target has been scraped:
- series: `count({job="rigwatch"})`; ingest: samples appended per second over the window
  (Prometheus: prometheus_tsdb_head_samples_appended_total; VM: vm_rows_inserted_total);
- CPU: user+system seconds of the engine's processes over the window ÷ window (VM: VM and
  vmalert together, since Prometheus also evaluates the rules); RSS at the end, likewise;
- overview p50: the rig overview's queries for all rigs, run one after the other as a
  dashboard load does; the median of 5 loads;
- rule evaluation: the time one evaluation of all shipped rule groups takes (Prometheus:
  prometheus_rule_group_last_duration_seconds summed; vmalert: the mean of
  vmalert_iteration_duration_seconds per group, summed).

The wear rules (prometheus/rules/wear.yml) run once an hour, so a short window may never see
them evaluated. A second table measures them at --wear-rigs: Prometheus with every shipped rule
file, wear.yml's groups evaluated every 15 s instead of hourly (one evaluation costs the same),
every card loaded and thermally throttled (the recordings keep only cards at work, so this is
their largest cost), and per wear group its prometheus_rule_group_last_duration_seconds (the
median over the window) and the series it adds (its recorded series, against the head's). Its
windows ([7d], offset 28d) hold only the minutes the run has, so the alert group's figure is a
floor.

    python3 bench/bench_fleet.py --rigs --wear-rigs 200   # the wear table alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import benchkit  # noqa: F401 - puts the repository root on sys.path (bench/ is sys.path[0])
import yaml

from tests.stack.stack_support import (
    DASHBOARD_FILES,
    RULE_FILES,
    dashboard_queries,
    fake_sysfs,
    substitute_variables,
)
from tests.support import (
    ManagedProcess,
    build_fake_nvml,
    free_port,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

INTERVAL = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class SnapshotServer:
    """Serves the latest scrape of one exporter to any number of rig targets."""

    def __init__(self, exporter: str) -> None:
        self.exporter = exporter
        self.body = b""
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = server.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.address = f"127.0.0.1:{self.http.server_address[1]}"

    def _refresh(self) -> None:
        while not self._stop.is_set():
            with urllib.request.urlopen(self.exporter + "/metrics", timeout=10) as response:
                self.body = response.read()
            self._stop.wait(INTERVAL)

    def __enter__(self) -> SnapshotServer:
        threading.Thread(target=self._refresh, daemon=True).start()
        wait_until(lambda: self.body, timeout=30)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.http.shutdown()
        self.http.server_close()


def rig_names(n: int) -> list[str]:
    return [f"rig{i:03d}" for i in range(n)]


def scrape_config(address: str, n: int, with_rules: bool) -> dict:
    config: dict = {
        "global": {"scrape_interval": f"{INTERVAL:g}s", "scrape_timeout": "10s"},
        "scrape_configs": [
            {
                "job_name": "rigwatch",
                "static_configs": [
                    {"targets": [address], "labels": {"rig": rig, "instance": rig}}
                    for rig in rig_names(n)
                ],
            }
        ],
    }
    if with_rules:
        config["global"]["evaluation_interval"] = f"{INTERVAL:g}s"
        config["rule_files"] = [str(path) for path in RULE_FILES]
    return config


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())["data"]["result"]


def metrics_sum(base: str, pattern: str) -> float:
    """Sum of every sample in base/metrics whose name and labels match the regex."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    regex = re.compile(pattern)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if not line.startswith("#") and regex.match(line)
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def overview_queries() -> list[str]:
    path = next(p for p in DASHBOARD_FILES if p.name == "rig-overview.json")
    values = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
    return [
        substitute_variables(expr, values)
        for _, expr, _ in dashboard_queries(json.loads(path.read_text()))
    ]


def overview_p50(base: str) -> float:
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        for promql in overview_queries():
            query(base, promql)
        loads.append(time.perf_counter() - start)
    return statistics.median(loads)


@contextlib.contextmanager
def serving(argv: list[str], ready_url: str) -> Iterator[ManagedProcess]:
    """The process of argv once ready_url answers 200; stopped on leaving."""
    proc = ManagedProcess(argv)
    try:
        wait_until(lambda: urllib.request.urlopen(ready_url).status == 200, 60, 0.5)
        yield proc
    finally:
        proc.stop(timeout=60)


def write_scrape_config(path: Path, address: str, n: int, with_rules: bool) -> Path:
    path.write_text(yaml.safe_dump(scrape_config(address, n, with_rules=with_rules)))
    return path


@contextlib.contextmanager
def prometheus_engine(workdir: Path, address: str, n: int) -> Iterator[dict]:
    port = free_port()
    config = write_scrape_config(workdir / "prometheus.yml", address, n, with_rules=True)
    base = f"http://127.0.0.1:{port}"
    argv = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with serving(argv, base + "/-/ready") as proc:
        yield {
            "base": base,
            "pids": [proc.pid],
            "ingested": lambda: metrics_sum(base, r"prometheus_tsdb_head_samples_appended_total"),
            "rule_seconds": lambda: metrics_sum(
                base, r"prometheus_rule_group_last_duration_seconds\{"
            ),
        }


@contextlib.contextmanager
def victoria_engine(workdir: Path, address: str, n: int) -> Iterator[dict]:
    port, alert_port = free_port(), free_port()
    config = write_scrape_config(workdir / "scrape.yml", address, n, with_rules=False)
    base = f"http://127.0.0.1:{port}"
    alert_base = f"http://127.0.0.1:{alert_port}"
    vm_argv = [
        "victoria-metrics",
        f"-storageDataPath={workdir / 'vm-data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-promscrape.config={config}",
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]
    vmalert_argv = [
        "vmalert",
        *(f"-rule={path}" for path in RULE_FILES),
        f"-datasource.url={base}",
        f"-remoteWrite.url={base}",
        f"-httpListenAddr=127.0.0.1:{alert_port}",
        f"-evaluationInterval={INTERVAL:g}s",
        "-notifier.url=http://127.0.0.1:9",
        "-loggerLevel=ERROR",
    ]
    with (
        serving(vm_argv, base + "/health") as vm,
        serving(vmalert_argv, alert_base + "/health") as vmalert,
    ):

        def rule_seconds() -> float:
            total = metrics_sum(alert_base, r"vmalert_iteration_duration_seconds_sum")
            count = metrics_sum(alert_base, r"vmalert_iteration_duration_seconds_count")
            groups = sum(len(yaml.safe_load(p.read_text())["groups"]) for p in RULE_FILES)
            return total / count * groups if count else float("nan")

        yield {
            "base": base,
            "pids": [vm.pid, vmalert.pid],
            "ingested": lambda: metrics_sum(base, r"vm_rows_inserted_total"),
            "rule_seconds": rule_seconds,
        }


ENGINES = (
    ("Prometheus 2.42", prometheus_engine),
    ("VictoriaMetrics 1.79 + vmalert", victoria_engine),
)


CARDS = 8  # per simulated rig
WEAR_FILE = next(path for path in RULE_FILES if path.name == "wear.yml")
WEAR_RECORDED = '{__name__=~"gpu:rigwatch_(loaded_temperature_celsius|throttled_share):avg1h"}'


def wear_every_interval(path: Path) -> Path:
    """wear.yml with its groups evaluated every INTERVAL instead of hourly."""
    rules = yaml.safe_load(WEAR_FILE.read_text())
    for group in rules["groups"]:
        group["interval"] = f"{INTERVAL:g}s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def measure_wear(workdir: Path, address: str, n: int, window: float) -> dict:
    """Per wear group: the median evaluation time over the window; and the series added."""
    config = scrape_config(address, n, with_rules=True)
    config["rule_files"] = [
        str(wear_every_interval(workdir / "wear.yml")) if path == WEAR_FILE else str(path)
        for path in RULE_FILES
    ]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [
        "prometheus",
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    groups = [g["name"] for g in yaml.safe_load(WEAR_FILE.read_text())["groups"]]
    with serving(argv, base + "/-/ready"):
        wait_until(
            lambda: query(base, f'count(up{{job="rigwatch"}} == 1) == {n}'), timeout=120, interval=1
        )

        def recorded() -> int:
            found = query(base, f"count({WEAR_RECORDED})")
            return int(float(found[0]["value"][1])) if found else 0

        # Both recordings for every card (all loaded and throttled) before timing the groups.
        wait_until(lambda: recorded() >= 2 * CARDS * n, timeout=300, interval=1)
        durations: dict[str, list[float]] = {g: [] for g in groups}
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            for group in groups:
                # From Prometheus's own /metrics: the bench's Prometheus does not scrape itself.
                durations[group].append(
                    metrics_sum(
                        base,
                        r'prometheus_rule_group_last_duration_seconds\{rule_group="[^"]*;'
                        + re.escape(group)
                        + '"',
                    )
                )
            time.sleep(INTERVAL)
        series = recorded()
        head = int(metrics_sum(base, r"prometheus_tsdb_head_series "))
    return {
        "groups": {g: statistics.median(d) for g, d in durations.items()},
        "recorded": series,
        "head": head,
    }


def measure(engine: dict, n: int, window: float) -> dict:
    base = engine["base"]

    def all_scraped() -> bool:
        result = query(base, 'count(up{job="rigwatch"} == 1)')
        return bool(result) and int(float(result[0]["value"][1])) == n

    wait_until(all_scraped, timeout=120, interval=1)
    time.sleep(INTERVAL)  # a full scrape and rule evaluation of every rig before measuring
    cpu0 = sum(cpu_seconds(pid) for pid in engine["pids"])
    in0, t0 = engine["ingested"](), time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    cpu = (sum(cpu_seconds(pid) for pid in engine["pids"]) - cpu0) / elapsed
    ingest = (engine["ingested"]() - in0) / elapsed
    series = int(float(query(base, 'count({job="rigwatch"})')[0]["value"][1]))
    return {
        "series": series,
        "ingest": ingest,
        "cpu": cpu,
        "rss": sum(rss_mib(pid) for pid in engine["pids"]),
        "overview": overview_p50(base),
        "rules": engine["rule_seconds"](),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rigs", type=int, nargs="*", default=[10, 50, 200])
    parser.add_argument(
        "--wear-rigs", type=int, nargs="*", default=[200], help="fleet sizes for the wear table"
    )
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per run")
    args = parser.parse_args()
    for tool in ("prometheus", "victoria-metrics", "vmalert"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_fleet: {tool} not found (apt install prometheus victoria-metrics)")
    build_fake_nvml()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rigwatch-fleet-") as tmp:
        workdir = Path(tmp)
        scenario = workdir / "scenario.json"
        write_scenario(scenario, make_scenario(8))
        # Each card on the bus with its AER files, as on a real rig.
        sysfs = fake_sysfs(workdir / "sys", cards=8)
        with (
            running_exporter(scenario, f"--path.sysfs={sysfs}") as (_, exporter),
            SnapshotServer(exporter) as snapshot,
        ):
            for n in args.rigs:
                for name, engine in ENGINES:
                    run_dir = workdir / f"{name.split()[0]}-{n}"
                    run_dir.mkdir()
                    log(f"bench_fleet: {name}, {n} rigs")
                    with engine(run_dir, snapshot.address, n) as handle:
                        rows.append((n, name, measure(handle, n, args.window)))
                    shutil.rmtree(run_dir, ignore_errors=True)
            wear_rows = []
            if args.wear_rigs:
                # The wear recordings keep only cards at work (power 60 % of the limit or more,
                # utilisation 50 % or more) and throttled: every card loaded and thermally
                # slowed is their largest cost, two recorded series per card.
                loaded = make_scenario(CARDS)
                for device in loaded["devices"]:
                    device.update(
                        power_mw=400000, utilization_gpu_percent=95, clock_event_reasons=0x20
                    )
                write_scenario(scenario, loaded)
            for n in args.wear_rigs:
                run_dir = workdir / f"wear-{n}"
                run_dir.mkdir()
                log(f"bench_fleet: wear rules, Prometheus, {n} rigs")
                wear_rows.append((n, measure_wear(run_dir, snapshot.address, n, args.window)))
                shutil.rmtree(run_dir, ignore_errors=True)
    if rows:
        print_engines(rows, args.window)
    if wear_rows:
        print_wear(wear_rows, args.window)


def print_engines(rows: list, window: float) -> None:
    print(f"Fleet of N rigs × 8 simulated cards, 15 s scrape and rule intervals, "
          f"{window:g} s window, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| rigs | engine | series | ingest (samples/s) | CPU (cores) | RSS (MiB) "
          "| overview load p50 (ms) | rule evaluation (ms) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n, name, m in rows:
        print(
            f"| {n} | {name} | {m['series']} | {m['ingest']:.0f} | {m['cpu']:.3f} "
            f"| {m['rss']:.0f} | {m['overview'] * 1000:.0f} | {m['rules'] * 1000:.1f} |"
        )


def print_wear(rows: list, window: float) -> None:
    print(f"\nWear rules (prometheus/rules/wear.yml) on Prometheus 2.42, evaluated every "
          f"{INTERVAL:g} s for the measurement (hourly when shipped), median of a {window:g} s "
          f"window, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| rigs | group | one evaluation (ms) |")
    print("|---|---|---|")
    for n, m in rows:
        for group, seconds in m["groups"].items():
            print(f"| {n} | {group} | {seconds * 1000:.1f} |")
    print("\n| rigs | series the wear rules add | head series, all rules | share |")
    print("|---|---|---|---|")
    for n, m in rows:
        share = m["recorded"] / m["head"] if m["head"] else float("nan")
        print(f"| {n} | {m['recorded']} | {m['head']} | {share:.1%} |")


if __name__ == "__main__":
    main()
