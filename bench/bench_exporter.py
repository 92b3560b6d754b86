"""Benchmark rigwatch's exporter against the bare-read floor, nvitop-exporter and node_exporter.

One run prints one markdown table to stdout (progress goes to stderr). Every exporter runs
against the same simulated NVML scenario (8 GPUs, 64 GPU processes whose pids are real `sleep`
children of this script, so psutil lookups do real work) and is scraped over HTTP on a free
127.0.0.1 port by a client inside this process, with the headers Prometheus sends.

    python3 bench/bench_exporter.py [--scrapes N]      # the benchmark
    python3 bench/bench_exporter.py --profile          # where a rigwatch scrape spends its time

Scrapes go over one kept-alive connection per target, as Prometheus's do, so a server that
stalls kept-alive responses (Nagle's algorithm against the client's delayed ACK) shows here;
a third of rigwatch's scrapes are repeated on a new connection each, for comparison.

Measured:
- rigwatch, all default collectors: scrape latency p50/p99, CPU seconds per scrape (the exporter
  process's user+system time across the scrape loop, divided by scrapes), RSS after the run.
- the floor: the same NVML and psutil reads done bare in a loop by a separate Python process
  (bench/floor_reader.py: pynvml + psutil, no exposition); its p50 per iteration, and
  rigwatch's p50 over it.
- nvitop-exporter (PyPI, in bench/.venv-nvitop, made on first use): CPU per refresh (its
  process CPU over an unscraped window divided by the refreshes its fixed-rate loop makes in
  that window) and its scrape latency.
- prometheus-node-exporter (Debian, default collectors) against rigwatch with only the host
  collector: latency, CPU per scrape and series counts.

Speed and memory are measured only here, never in timed tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from benchkit import REPO, percentile  # bench/ is sys.path[0] when run as a script

from tests.support import (
    ManagedProcess,
    build_fake_nvml,
    fake_nvml_env,
    free_port,
    make_device,
    make_scenario,
    wait_until,
    write_scenario,
)

NUM_GPUS = 8
FLOOR_READER = REPO / "bench" / "floor_reader.py"
PROCESSES_PER_GPU = 8
NVITOP_VENV = REPO / "bench" / ".venv-nvitop"
NVITOP_REQUIREMENT = "nvitop-exporter==1.7.2"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
WARMUP_SCRAPES = 10
MB = 1_000_000

# What Prometheus 2.x sends when it scrapes a classic text-format target.
PROMETHEUS_HEADERS = {
    "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}

TARGETS = {
    "p50_ms": 10.0,
    "p99_ms": 25.0,
    "floor_ratio": 2.0,
    "rss_mb": 60.0,
    # CPU per scrape against nvitop-exporter's CPU per refresh: a tenth (issue 18's target).
    "cpu_vs_nvitop": 0.1,
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- measurement helpers ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (all its threads, not its children)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


@dataclass
class ScrapeResult:
    status: int
    seconds: float
    body: bytes
    encoding: str


class ScrapeClient:
    """An HTTP client for one target that keeps its connection open between scrapes, as
    Prometheus does; a server that closes it (HTTP/1.0, `Connection: close`) is reconnected
    to on the next scrape, inside the timing, as Prometheus would have to."""

    def __init__(self, port: int, reuse: bool = True) -> None:
        self.port = port
        self.reuse = reuse
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.reused = 0  # scrapes that went over an already open connection

    def get(self, headers: dict[str, str], path: str = "/metrics") -> ScrapeResult:
        """One GET, timed from sending the request to the last body byte."""
        if not self.reuse:
            self.conn.close()
        for attempt in (1, 2):
            had_socket = self.conn.sock is not None
            start = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=headers)
                resp = self.conn.getresponse()
                body = resp.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                # The server dropped an idle kept-alive connection: one retry on a new one.
                self.conn.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - start
            self.reused += had_socket
            encoding = resp.getheader("Content-Encoding") or ""
            return ScrapeResult(resp.status, elapsed, body, encoding)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def scrape(port: int, headers: dict[str, str], path: str = "/metrics") -> ScrapeResult:
    """One GET on a connection of its own."""
    client = ScrapeClient(port)
    try:
        return client.get(headers, path)
    finally:
        client.close()


def count_series(result: ScrapeResult) -> int:
    body = gzip.decompress(result.body) if result.encoding == "gzip" else result.body
    return sum(1 for line in body.decode(errors="replace").splitlines() if line and line[0] != "#")


@dataclass
class ScrapeStats:
    """What a scrape loop against one running exporter measured."""

    p50_ms: float
    p99_ms: float
    cpu_ms_per_scrape: float
    rss_mb: float
    series: int
    body_kb: float
    encoding: str
    kept_alive: bool


def scrape_loop(
    pid: int, port: int, scrapes: int, headers: dict[str, str], reuse: bool = True
) -> ScrapeStats:
    """Warm up, then scrape `scrapes` times back to back while reading the target's CPU time."""
    client = ScrapeClient(port, reuse=reuse)
    try:
        for _ in range(WARMUP_SCRAPES):
            result = client.get(headers)
            if result.status != 200:
                raise RuntimeError(f"warm-up scrape answered HTTP {result.status}")
        latencies: list[float] = []
        client.reused = 0
        cpu_before = cpu_seconds(pid)
        for _ in range(scrapes):
            result = client.get(headers)
            if result.status != 200:
                raise RuntimeError(f"scrape answered HTTP {result.status}")
            latencies.append(result.seconds)
        cpu_after = cpu_seconds(pid)
    finally:
        client.close()
    return ScrapeStats(
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        cpu_ms_per_scrape=(cpu_after - cpu_before) / scrapes * 1000,
        rss_mb=rss_mb(pid),
        series=count_series(result),
        body_kb=len(result.body) / 1000,
        encoding=result.encoding or "identity",
        kept_alive=client.reused == scrapes,
    )


def wait_for_metrics(proc: ManagedProcess, port: int, timeout: float = 30.0) -> None:
    def ready() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.proc.returncode}")
        return scrape(port, {}).status == 200

    try:
        wait_until(ready, timeout=timeout, interval=0.2, what=f"/metrics on port {port}")
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(
            f"{proc.args[0]} did not come up: {exc}\n{proc.output()[-2000:]}"
        ) from exc


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str] | None = None):
    """A child process that is stopped by its pid however the block ends."""
    proc = ManagedProcess(args, env=env)
    try:
        yield proc
    finally:
        proc.stop()


# --- the scenario -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a stand-in child before exec: the kernel kills it if the bench itself is killed."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextlib.contextmanager
def gpu_process_stand_ins(count: int):
    """`count` real, idle processes whose pids the simulated GPUs report as their users."""
    children: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            children.append(
                subprocess.Popen(
                    ["sleep", "600"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            )
        yield [child.pid for child in children]
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def bench_scenario(pids: list[int]) -> dict:
    """8 cards: four datacenter-like (ECC, remapped rows, memory temperature, GPM) and four
    consumer-like, each with 8 processes (7 compute, 1 graphics)."""
    devices = []
    for index in range(NUM_GPUS):
        datacenter = index < NUM_GPUS // 2
        overrides: dict = {
            "temperature_c": 40 + 4 * index,
            "power_mw": 150000 + 20000 * index,
            "energy_mj": 10_000_000 * (index + 1),
            "utilization_gpu_percent": 10 * index + 5,
            "utilization_memory_percent": 5 * index + 3,
            "memory_used_bytes": (index + 1) * 2 * 1024**3,
            "fan_speeds_percent": [30 + index, 32 + index],
            "pstate": 0,
            "clock_event_reasons": 0,
        }
        if datacenter:
            overrides.update(
                name="NVIDIA H100 80GB HBM3",
                # Hopper's profiling metrics (the gpm collector), as an H200 read them under load.
                gpm={
                    "graphics_util": 99.4,
                    "sm_util": 95.9,
                    "sm_occupancy": 14.2,
                    "integer_util": 1.4,
                    "any_tensor_util": 93.1,
                    "hmma_tensor_util": 93.1,
                    "imma_tensor_util": 0.0,
                    "dfma_tensor_util": 0.0,
                    "dram_bw_util": 17.3,
                    "fp64_util": 0.0,
                    "fp32_util": 0.0,
                    "fp16_util": 0.0,
                    "pcie_tx_per_sec": 4.5,
                    "pcie_rx_per_sec": 12.8,
                    "nvlink_total_rx_per_sec": 0.0,
                    "nvlink_total_tx_per_sec": 0.0,
                },
                memory_temperature_c=50 + index,
                memory_total_bytes=85899345920,
                fan_speeds_percent=[],
                ecc={
                    "corrected_volatile": index,
                    "uncorrected_volatile": 0,
                    "corrected_aggregate": 10 * index,
                    "uncorrected_aggregate": 0,
                },
                remapped_rows={
                    "correctable": index,
                    "uncorrectable": 0,
                    "pending": 0,
                    "failure": 0,
                },
            )
        own = pids[index * PROCESSES_PER_GPU : (index + 1) * PROCESSES_PER_GPU]
        overrides["processes"] = [
            {
                "pid": pid,
                "used_memory_bytes": (slot + 1) * 256 * 1024**2,
                "kind": "graphics" if slot == PROCESSES_PER_GPU - 1 else "compute",
            }
            for slot, pid in enumerate(own)
        ]
        devices.append(make_device(index, **overrides))
    return make_scenario(NUM_GPUS, devices=devices)


# --- the floor ----------------------------------------------------------------------------


# Run in its own process (LD_LIBRARY_PATH must be set before pynvml loads the library). The
# floor is the reading a scrape cannot avoid: every NVML value the metric contract names that
# can change between scrapes, and the host's psutil reads. What cannot change (thresholds, max
# clocks and link, fan count, boot time) is read once before the loop, and a GPU process's
@dataclass
class FloorStats:
    p50_ms: float
    nvml_p50_ms: float
    process_p50_ms: float
    host_p50_ms: float
    uncached_names_p50_ms: float
    nvml_calls: int
    pids: int


def measure_floor(scenario_path: Path, iterations: int) -> FloorStats:
    """bench/floor_reader.py in a child process that has the simulated library."""
    floor = run_floor_reader({**os.environ, **fake_nvml_env(scenario_path)}, iterations)
    if floor.devices != NUM_GPUS or floor.stats.pids != NUM_GPUS * PROCESSES_PER_GPU:
        raise RuntimeError(f"floor saw {floor.devices} GPUs and {floor.stats.pids} processes")
    return floor.stats


@dataclass
class FloorRun:
    stats: FloorStats
    devices: int


def run_floor_reader(env: dict[str, str], iterations: int) -> FloorRun:
    """bench/floor_reader.py in a child process with the given environment (the simulated
    library's, or none for a real driver)."""
    done = subprocess.run(
        [sys.executable, str(FLOOR_READER), str(iterations), str(WARMUP_SCRAPES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"floor loop exited {done.returncode}: {last[0]}")
    data = json.loads(done.stdout)
    pids = min(data["pids"])

    def p50_ms(key: str) -> float:
        return percentile(data[key], 0.5) * 1000

    stats = FloorStats(
        p50_ms=p50_ms("total"),
        nvml_p50_ms=p50_ms("nvml"),
        process_p50_ms=p50_ms("proc"),
        host_p50_ms=p50_ms("host"),
        uncached_names_p50_ms=p50_ms("uncached"),
        nvml_calls=data["nvml_calls"],
        pids=pids,
    )
    return FloorRun(stats, data["devices"])


# --- peers --------------------------------------------------------------------------------


def ensure_nvitop_venv() -> Path:
    """bench/.venv-nvitop with nvitop-exporter, made on first use and reused afterwards."""
    exe = NVITOP_VENV / "bin" / "nvitop-exporter"
    if exe.exists():
        return exe
    log(f"creating {NVITOP_VENV.relative_to(REPO)} and installing {NVITOP_REQUIREMENT}")
    subprocess.run([sys.executable, "-m", "venv", str(NVITOP_VENV)], check=True, timeout=120)
    subprocess.run(
        [str(NVITOP_VENV / "bin" / "pip"), "install", "-q", NVITOP_REQUIREMENT],
        check=True,
        timeout=300,
    )
    if not exe.exists():
        raise RuntimeError(f"{NVITOP_REQUIREMENT} installed no {exe}")
    return exe


@dataclass
class NvitopStats:
    cpu_ms_per_refresh: float
    refreshes: float
    scrape: ScrapeStats
    version: str


def measure_nvitop(
    scenario_path: Path, scrapes: int, interval: float, window: float
) -> NvitopStats:
    exe = ensure_nvitop_venv()
    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    port = free_port()
    args = [
        str(exe),
        "--bind-address=127.0.0.1",
        f"--port={port}",
        f"--interval={interval}",
        "--hostname=bench",
    ]
    with started(args, env=fake_nvml_env(scenario_path)) as proc:
        wait_for_metrics(proc, port, timeout=60)
        # Let the first refreshes (cold caches) pass before the window opens.
        time.sleep(3 * interval)
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(window)
        cpu_after = cpu_seconds(proc.pid)
        # Its loop is fixed-rate (next = start + interval), so the window holds window/interval
        # refreshes as long as one refresh takes less than the interval (checked below).
        refreshes = window / interval
        cpu_per_refresh = (cpu_after - cpu_before) / refreshes
        if cpu_per_refresh > 0.8 * interval:
            log(f"nvitop-exporter refresh takes ~{cpu_per_refresh:.2f}s of a {interval}s interval")
        stats = scrape_loop(proc.pid, port, scrapes, PROMETHEUS_HEADERS)
        body = scrape(port, {}).body.decode(errors="replace")
        processes = sum(
            1 for line in body.splitlines() if line.startswith("process_gpu_memory_MiB{")
        )
        if processes != NUM_GPUS * PROCESSES_PER_GPU:
            raise RuntimeError(f"nvitop-exporter served {processes} GPU processes")
        return NvitopStats(cpu_per_refresh * 1000, refreshes, stats, version)


def node_exporter_version() -> str:
    out = subprocess.run(
        [NODE_EXPORTER, "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    return out.split("\n", 1)[0].replace("node_exporter, version ", "").split(" ")[0]


def measure_node_exporter(scrapes: int) -> ScrapeStats:
    port = free_port()
    with started([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"]) as proc:
        wait_for_metrics(proc, port)
        return scrape_loop(proc.pid, port, scrapes, PROMETHEUS_HEADERS)


def measure_rigwatch(
    scenario_path: Path | None,
    scrapes: int,
    *flags: str,
    headers: dict[str, str],
    reuse: bool = True,
) -> ScrapeStats:
    port = free_port()
    args = [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}", *flags]
    env = fake_nvml_env(scenario_path) if scenario_path else None
    with started(args, env=env) as proc:
        wait_for_metrics(proc, port)
        stats = scrape_loop(proc.pid, port, scrapes, headers, reuse=reuse)
        if "--no-collector.gpu" not in flags:
            check_rigwatch_saw_scenario(port)
        return stats


def check_rigwatch_saw_scenario(port: int) -> None:
    """A fast scrape that found no GPUs would be a meaningless figure: refuse it."""
    body = scrape(port, {}).body.decode(errors="replace")
    gpus = sum(1 for line in body.splitlines() if line.startswith("rigwatch_gpu_up{"))
    procs = sum(
        1 for line in body.splitlines() if line.startswith("rigwatch_gpu_process_memory_bytes{")
    )
    if gpus != NUM_GPUS or procs != NUM_GPUS * PROCESSES_PER_GPU:
        raise RuntimeError(f"rigwatch served {gpus} GPUs and {procs} GPU processes")


# --- the report ---------------------------------------------------------------------------


@dataclass
class Results:
    full: ScrapeStats | None = None
    full_identity: ScrapeStats | None = None
    full_fresh: ScrapeStats | None = None
    floor: FloorStats | None = None
    nvitop: NvitopStats | None = None
    host_only: ScrapeStats | None = None
    node: ScrapeStats | None = None
    errors: dict[str, str] = field(default_factory=dict)


def attempt(results: Results, name: str, fn, *args, **kwargs):
    log(f"measuring {name}")
    started_at = time.monotonic()
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
        results.errors[name] = f"{type(exc).__name__}: {exc}".strip()
        log(f"{name} failed:\n{traceback.format_exc()}")
        return None
    log(f"{name} done in {time.monotonic() - started_at:.1f}s")
    return value


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.3g}×"


def verdict(value: float | None, limit: float | None, unit: str, strict: bool = False) -> str:
    """pass, or MISS with how far over the target the value is."""
    if value is None or limit is None:
        return "n/a"
    ok = value < limit if strict else value <= limit
    if ok:
        return "pass"
    over = f"+{value - limit:.2f}{unit}" if unit != "×" else f"{value:.3g}× vs {limit:g}×"
    return f"**MISS** ({over}, {(value / limit - 1) * 100:.0f}% over)"


def table_row(
    label: str,
    mine: float | None,
    reference: float | None = None,
    *,
    compared: bool = True,
    show=ms,
    limit: float | None = None,
    unit: str = "",
    ratio_limit: float | None = None,
    strict: bool = False,
) -> tuple[str, ...]:
    """One row of the table: rigwatch's figure, the reference's and their ratio (blank when not
    compared), with its target: limit on rigwatch's figure or ratio_limit on the ratio."""
    beside = (show(reference), ratio(mine, reference)) if compared else ("", "")
    judged = mine
    if ratio_limit is not None:
        limit, unit = ratio_limit, "×"
        judged = mine / reference if mine is not None and reference else None
    if limit is None:
        return (label, show(mine), *beside, "", "—")
    target = f"{'<' if strict else '≤'} {limit:g}{unit}"
    return (label, show(mine), *beside, target, verdict(judged, limit, unit, strict))


def below_peer(label: str, mine: float | None, reference: float | None) -> tuple[str, ...]:
    """A table row whose target is rigwatch's figure strictly under the peer's."""
    return table_row(label, mine, reference, ratio_limit=1.0, strict=True)


def megabytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"


def count(value: int | None) -> str:
    return str(value or "n/a")


def render(results: Results, args: argparse.Namespace, versions: dict[str, str]) -> str:
    full, floor, nv, host, node = (
        results.full,
        results.floor,
        results.nvitop,
        results.host_only,
        results.node,
    )
    nv_scrape = nv.scrape if nv else None

    def get(obj, attr):
        return None if obj is None else getattr(obj, attr)

    rows = [
        table_row(
            f"full scrape {q} latency",
            get(full, key),
            compared=False,
            limit=TARGETS[key],
            unit=" ms",
        )
        for q, key in (("p50", "p50_ms"), ("p99", "p99_ms"))
    ]
    rows += [
        table_row(
            "full scrape p50 vs the floor (bare reads p50)",
            get(full, "p50_ms"),
            get(floor, "p50_ms"),
            ratio_limit=TARGETS["floor_ratio"],
        ),
        table_row(
            "CPU per scrape vs nvitop-exporter CPU per refresh",
            get(full, "cpu_ms_per_scrape"),
            get(nv, "cpu_ms_per_refresh"),
            ratio_limit=TARGETS["cpu_vs_nvitop"],
            strict=True,
        ),
        table_row(
            "RSS after the run (nvitop-exporter beside)",
            get(full, "rss_mb"),
            get(nv_scrape, "rss_mb"),
            show=megabytes,
            limit=TARGETS["rss_mb"],
            unit=" MB",
        ),
    ]
    # The plain comparisons: the same figure of rigwatch and of its peer, side by side.
    for label, ours, theirs, attr, show in (
        ("scrape p50 latency vs nvitop-exporter", full, nv_scrape, "p50_ms", ms),
        ("scrape p99 latency vs nvitop-exporter", full, nv_scrape, "p99_ms", ms),
        ("series per scrape vs nvitop-exporter", full, nv_scrape, "series", count),
    ):
        rows.append(table_row(label, get(ours, attr), get(theirs, attr), show=show))
    rows.append(
        below_peer(
            "host-only scrape p50 vs node_exporter", get(host, "p50_ms"), get(node, "p50_ms")
        )
    )
    for label, attr, show in (
        ("host-only scrape p99 vs node_exporter", "p99_ms", ms),
        ("host-only CPU per scrape vs node_exporter", "cpu_ms_per_scrape", ms),
        ("host-only series per scrape vs node_exporter", "series", count),
        ("host-only RSS vs node_exporter", "rss_mb", megabytes),
    ):
        rows.append(table_row(label, get(host, attr), get(node, attr), show=show))
    for position, label, extra in (
        (2, "full scrape p50 / p99, new connection per scrape", results.full_fresh),
        (3, "full scrape p50 / p99 without gzip", results.full_identity),
    ):
        if extra is not None:
            summary = f"{extra.p50_ms:.2f} / {extra.p99_ms:.2f} ms"
            rows.insert(position, (label, summary, "", "", "", "—"))

    lines = [
        "## rigwatch exporter benchmark",
        "",
        f"- machine: {os.cpu_count()} cores ({cpu_model()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Linux {platform.release()}; "
        f"load average {args.load_before} before the run, {load_average()} after "
        "(other work on the machine skews every figure)",
        f"- Python {platform.python_version()}; rigwatch {versions['rigwatch']}, "
        f"nvitop-exporter {versions.get('nvitop', 'n/a')}, "
        f"prometheus-node-exporter {versions.get('node', 'n/a')}",
        f"- scenario: simulated NVML, {NUM_GPUS} GPUs (4 datacenter-like with ECC, 4 consumer), "
        f"{NUM_GPUS * PROCESSES_PER_GPU} GPU processes (real `sleep` pids)",
        f"- {args.scrapes} scrapes per exporter after {WARMUP_SCRAPES} warm-up, back to back, "
        "over one kept-alive loopback connection (as Prometheus scrapes), Prometheus's headers "
        "(gzip accepted); "
        f"nvitop-exporter CPU over a {args.nvitop_window:g} s unscraped window at "
        f"--interval={args.nvitop_interval:g}",
        "",
        "| measure | rigwatch | reference | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    if floor:
        lines.append(
            f"- floor per iteration (p50): {floor.nvml_calls} NVML calls {floor.nvml_p50_ms:.2f} ms"
            f", /proc/<pid>/stat for {floor.pids} GPU processes {floor.process_p50_ms:.2f} ms, "
            f"host psutil reads {floor.host_p50_ms:.2f} ms; static values and process names "
            "read once. Uncached psutil name+user for the same pids would add "
            f"{floor.uncached_names_p50_ms:.2f} ms."
        )
    for name, stats in (
        ("rigwatch full", full),
        ("rigwatch host-only", host),
        ("nvitop-exporter", nv_scrape),
        ("node_exporter", node),
    ):
        if stats:
            connection = "kept alive" if stats.kept_alive else "reconnected for every scrape"
            lines.append(
                f"- {name}: {stats.series} series, {stats.body_kb:.1f} kB on the wire "
                f"({stats.encoding}), connection {connection}"
            )
    for name, error in results.errors.items():
        lines.append(f"- **{name} failed**: {error.splitlines()[0][:300]}")
    return "\n".join(lines)


def first_version(text: str) -> str:
    match = re.search(r"\d+(\.\d+)+", text)
    return match.group(0) if match else text


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def rigwatch_version() -> str:
    with contextlib.suppress(Exception):
        from exporter import __version__

        return __version__
    return "unknown"


# --- profile mode -------------------------------------------------------------------------


def profile_worker(scrapes: int) -> None:
    """Runs inside a child that has the simulated library: rigwatch's scrape in-process.

    Times Scraper.render() as the server calls it (lane threads), then the same work unit by
    unit in one thread (which cProfile can see whole), and prints where the time goes.
    """
    import cProfile
    import io
    import pstats

    from exporter.cli import parse_settings, tune_gc
    from exporter.collectors import create_collectors
    from exporter.exposition import render as render_exposition
    from exporter.nvml.session import NvmlSession
    from exporter.scrape import Scraper, UnitOutcome

    settings = parse_settings([f"--web.listen-address=127.0.0.1:{free_port()}"])
    session = NvmlSession(settings.nvml_retry_max_seconds, settings.sysfs)
    session.start()
    scraper = Scraper(create_collectors(settings, session), settings.scrape_timeout_seconds)
    tune_gc()  # as the exporter's main() does once started

    def serial(parts: dict[str, float]) -> bytes:
        families = []
        for collector in scraper.collectors:
            outcomes = []
            for unit in collector.plan():
                start = time.perf_counter()
                value = unit.fn()
                took = time.perf_counter() - start
                part = f"{collector.name}: unit {unit.key.split('/')[0]}"
                if unit.key.count("/") and not unit.key.startswith("gpu"):
                    part = f"{collector.name}: unit {unit.key}"
                parts[part] = parts.get(part, 0.0) + took
                outcomes.append(UnitOutcome(unit.key, True, value, None, took))
            start = time.perf_counter()
            built, _ = collector.build(outcomes)
            part = f"{collector.name}: build families"
            parts[part] = parts.get(part, 0.0) + time.perf_counter() - start
            families.extend(built)
        start = time.perf_counter()
        body = render_exposition(families)
        parts["render text"] = parts.get("render text", 0.0) + time.perf_counter() - start
        return body

    for _ in range(WARMUP_SCRAPES):
        scraper.render()
        serial({})
    threaded = []
    for _ in range(scrapes):
        start = time.perf_counter()
        scraper.render()
        threaded.append(time.perf_counter() - start)
    parts: dict[str, float] = {}
    whole = []
    for _ in range(scrapes):
        start = time.perf_counter()
        serial(parts)
        whole.append(time.perf_counter() - start)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(scrapes):
        serial({})
    profiler.disable()

    print(
        f"Scraper.render() in-process, lane threads: p50 {percentile(threaded, 0.5) * 1000:.2f}"
        f" ms, p99 {percentile(threaded, 0.99) * 1000:.2f} ms ({scrapes} scrapes, no HTTP)"
    )
    print(f"the same work in one thread: p50 {percentile(whole, 0.5) * 1000:.2f} ms\n")
    total = sum(parts.values())
    print("| part of a scrape (one thread) | ms per scrape | share |\n|---|---|---|")
    for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {part} | {seconds / scrapes * 1000:.3f} | {seconds / total * 100:.0f}% |")
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:20]  # by own time
    print("\n| function (cProfile, by own time) | calls per scrape | own ms | cumulative ms |")
    print("|---|---|---|---|")
    for (filename, line, name), (_, ncalls, own, cumulative, _) in rows:
        where = filename.replace(str(REPO) + "/", "").replace(sys.prefix, "<py>")
        print(
            f"| {name} ({where}:{line}) | {ncalls / scrapes:.0f} | "
            f"{own / scrapes * 1000:.3f} | {cumulative / scrapes * 1000:.3f} |"
        )
    sys.stdout.flush()
    # The session's supervisor and the xid thread are daemons; nothing to flush or save.
    os._exit(0)


def run_profile(scrapes: int) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="rigwatch-bench-") as tmp,
        gpu_process_stand_ins(NUM_GPUS * PROCESSES_PER_GPU) as pids,
    ):
        scenario_path = Path(tmp) / "scenario.json"
        write_scenario(scenario_path, bench_scenario(pids))
        done = subprocess.run(
            [sys.executable, __file__, "--profile-worker", f"--scrapes={scrapes}"],
            env={**os.environ, **fake_nvml_env(scenario_path)},
            cwd=REPO,
            timeout=300,
        )
    return done.returncode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=300, help="scrapes per exporter")
    parser.add_argument(
        "--nvitop-interval", type=float, default=0.5, help="nvitop-exporter --interval (s)"
    )
    parser.add_argument(
        "--nvitop-window", type=float, default=10.0, help="seconds of nvitop CPU measured"
    )
    parser.add_argument(
        "--skip-peers", action="store_true", help="measure rigwatch and the floor only"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark: where a rigwatch scrape spends its time (cProfile)",
    )
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 20 <= args.scrapes <= 10_000:
        parser.error("--scrapes must be between 20 and 10000")
    if not 0.25 <= args.nvitop_interval <= 5 or not 2 <= args.nvitop_window <= 120:
        parser.error("--nvitop-interval must be 0.25..5 s and --nvitop-window 2..120 s")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit unwinds through the finally blocks, so every child is still stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    if args.profile_worker:
        profile_worker(args.scrapes)
    if args.profile:
        build_fake_nvml()
        return run_profile(args.scrapes)
    args.load_before = load_average()
    began = time.monotonic()
    log("building the simulated NVML library")
    build_fake_nvml()
    results = Results()
    versions = {"rigwatch": rigwatch_version()}
    with (
        tempfile.TemporaryDirectory(prefix="rigwatch-bench-") as tmp,
        gpu_process_stand_ins(NUM_GPUS * PROCESSES_PER_GPU) as pids,
    ):
        workdir = Path(tmp)
        scenario_path = workdir / "scenario.json"
        write_scenario(scenario_path, bench_scenario(pids))

        def rigwatch(name: str, scrapes: int, *flags: str, **scrape_options) -> ScrapeStats | None:
            options = {"headers": PROMETHEUS_HEADERS, **scrape_options}
            return attempt(
                results, name, measure_rigwatch, scenario_path, scrapes, *flags, **options
            )

        side_scrapes = max(20, args.scrapes // 3)
        results.full = rigwatch("rigwatch full", args.scrapes)
        results.full_fresh = rigwatch(
            "rigwatch full, new connection per scrape", side_scrapes, reuse=False
        )
        if results.full and results.full.encoding == "gzip":
            # Only meaningful when the exporter compresses: shows what gzip costs per scrape.
            identity = {k: v for k, v in PROMETHEUS_HEADERS.items() if k != "Accept-Encoding"}
            results.full_identity = rigwatch(
                "rigwatch full without gzip", side_scrapes, headers=identity
            )
        results.floor = attempt(results, "floor", measure_floor, scenario_path, args.scrapes)
        results.host_only = rigwatch(
            "rigwatch host-only",
            args.scrapes,
            "--no-collector.gpu",
            "--no-collector.gpu_process",
            "--no-collector.xid",
            "--no-collector.gpm",
        )
        if not args.skip_peers:
            results.nvitop = attempt(
                results,
                "nvitop-exporter",
                measure_nvitop,
                scenario_path,
                args.scrapes,
                args.nvitop_interval,
                args.nvitop_window,
            )
            if results.nvitop:
                versions["nvitop"] = first_version(results.nvitop.version)
            with contextlib.suppress(Exception):
                versions["node"] = node_exporter_version()
            results.node = attempt(results, "node_exporter", measure_node_exporter, args.scrapes)

    print(render(results, args, versions))
    log(f"whole run took {time.monotonic() - began:.0f}s")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
