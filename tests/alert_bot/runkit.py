"""A simulated rig for the run watch's tests: real child processes as GPU processes on the
simulated NVML (energy counters advancing at a set power), the real exporter, and a real
Prometheus scraping it every second with the shipped energy and run rules."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.alert_bot.botkit import wait_prometheus_has
from tests.support import (
    REPO,
    ManagedProcess,
    free_port,
    http_get,
    make_scenario,
    running_exporter,
    stopped_after,
    wait_until,
    write_scenario,
)

RULES = REPO / "prometheus" / "rules" / "runs.yml"
NO_COUNTER = {"nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED"}
SCRAPE_S = 1  # the test Prometheus's scrape and evaluation interval (prometheus_config)
# A change on the rig reaches the chat after a scrape, a watch cycle and runs.min_duration: a
# few seconds on a quiet machine. On a loaded one scrapes time out (their timeout is the
# interval) and cycles stretch, so a wait allows this many times that path: a margin, not a
# guess at how long it takes.
MARGIN = 12


def watch_deadline(cycle_s: float, min_duration_s: float = 0.0) -> float:
    """How long a wait on the run watch allows: MARGIN times a scrape, a cycle and
    min_duration."""
    return MARGIN * (SCRAPE_S + cycle_s + min_duration_s)


def wait_past_min_duration(prometheus: str, pid: int, min_duration_s: float, timeout: float):
    """Wait until Prometheus holds a sample of the process taken more than min_duration after
    it started: the watch measures a run from its start to its last sample, so from then on its
    end is one worth reporting. The event itself, whatever the machine's speed."""
    start = f'rigwatch_gpu_process_start_time_seconds{{pid="{pid}"}}'
    wait_prometheus_has(prometheus, f"timestamp({start}) - {start} > {min_duration_s}", timeout)


def prometheus_instant_queries(prometheus: str) -> float:
    """Instant queries the Prometheus has answered (its own counter): the run watch's
    rhythm, read from outside the bot."""
    status, body = http_get(prometheus + "/metrics")
    if status != 200:
        raise RuntimeError(f"Prometheus /metrics answered {status}")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def wait_watch_cycles(queries: Callable[[], float], cycles: int, timeout: float) -> None:
    """Wait until the run watch has looked `cycles` more times after the look in progress.
    ``queries`` counts the instant queries it has made (Prometheus's counter, or the bot's
    own: ``app.runs.prometheus.queries``): a cycle in which nothing starts or ends makes two
    (present processes, readable rigs), one when Prometheus is down. A check that something
    does not happen waits for these looks, not for a stretch of the clock."""
    start = queries()
    wait_until(
        lambda: queries() >= start + 2 * (cycles + 1), timeout, what=f"{cycles} watch cycles"
    )


class SimulatedRig:
    """Cards drawing a set power (the energy counter advances with it), processes placed on
    them; the scenario file is rewritten every 0.2 s."""

    def __init__(self, path: Path, cards: int = 3, watts: float = 300.0):
        self.path = path
        self.scenario = make_scenario(cards)
        self.watts = watts
        self.processes: dict[int, list[dict]] = {i: [] for i in range(cards)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._advance, daemon=True)
        for device in self.scenario["devices"]:
            device["energy_mj"] = 1_000_000
            device["power_mw"] = int(watts * 1000)
            device["utilization_gpu_percent"] = 90
        self._last = time.monotonic()
        self.write()

    def without_counter(self, card: int) -> None:
        with self._lock:
            self.scenario["devices"][card].setdefault("errors", {}).update(NO_COUNTER)
        self.write()

    def place(self, pid: int, cards: list[int], memory: int = 6 << 30) -> None:
        with self._lock:
            for card in cards:
                self.processes[card].append(
                    {"pid": pid, "used_memory_bytes": memory, "sm_util_percent": 80}
                )
        self.write()

    def remove(self, pid: int) -> None:
        with self._lock:
            for entries in self.processes.values():
                entries[:] = [p for p in entries if p["pid"] != pid]
        self.write()

    def energy_joules(self, card: int) -> float:
        """What the card's energy counter reads now (joules)."""
        self.write()
        with self._lock:
            return self.scenario["devices"][card]["energy_mj"] / 1000

    def write(self) -> None:
        with self._lock:
            now = time.monotonic()
            for index, device in enumerate(self.scenario["devices"]):
                device["energy_mj"] += int(self.watts * (now - self._last) * 1000)
                device["processes"] = list(self.processes[index])
            self._last = now
            write_scenario(self.path, self.scenario)

    def _advance(self) -> None:
        while not self._stop.wait(0.2):
            self.write()

    def __enter__(self) -> SimulatedRig:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def training_process(
    tmp_path: Path, script: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A real process that looks like `python3 -u .../train.py --token ...` (with env added to
    its environment)."""
    path = tmp_path / script
    path.write_text("import time\ntime.sleep(600)\n")
    return subprocess.Popen(
        [sys.executable, "-u", str(path), "--token", "hidden"], env={**os.environ, **(env or {})}
    )


def prometheus_config(exporter: str, rig: str = "rig1") -> str:
    return (
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: rigwatch\n"
        f"    static_configs: [{{targets: ['{exporter}'], labels: {{rig: {rig}}}}}]\n"
    )


class RestartablePrometheus:
    """A real Prometheus on a fixed port and data directory, so it can be stopped and started
    again with its history (a Prometheus outage)."""

    def __init__(self, home: Path, config: str):
        self.home = home
        self.port = free_port()
        home.mkdir(parents=True, exist_ok=True)
        (home / "prometheus.yml").write_text(config)
        self.url = f"http://127.0.0.1:{self.port}"
        self._context: contextlib.AbstractContextManager | None = None

    def start(self) -> None:
        proc = ManagedProcess(
            [
                "prometheus",
                f"--config.file={self.home / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.home,
        )
        self._context = stopped_after(proc, self.url + "/-/ready", "prometheus", 60)
        self._context.__enter__()

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


@contextlib.contextmanager
def rig_with_prometheus(
    tmp_path: Path, rig: SimulatedRig, *exporter_args: str
) -> Iterator[tuple[str, RestartablePrometheus]]:
    """The exporter on the simulated rig and a Prometheus scraping it; yields (exporter URL,
    Prometheus)."""
    with running_exporter(rig.path, "--nvml.retry-max-seconds=0.5", *exporter_args) as (_, base):
        prometheus = RestartablePrometheus(
            tmp_path / "prometheus", prometheus_config(base.removeprefix("http://"))
        )
        prometheus.start()
        try:
            # Scraped and recorded before anything starts, so no run begins before the data.
            wait_prometheus_has(prometheus.url, "gpu:rigwatch_energy_watts:rate1m", timeout=30)
            yield base, prometheus
        finally:
            prometheus.stop()
