"""The scrape: runs every collector's work units against a deadline and renders the exposition.

Each unit of work (one GPU, the host, ...) runs on its own long-lived worker thread. A scrape
that finds a unit still running (another scrape started it, or an NVML call hangs) joins that
run instead of starting a second one, so a hung call costs one stuck thread in total, never one
per scrape, and only the series of that unit go missing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from exporter import __version__
from exporter.families import build_families, specs

LOG = logging.getLogger("rigwatch.exporter.scrape")

WORKER_IDLE_EXIT_SECONDS = 300.0

SELF_FAMILIES = specs(
    ("rigwatch_exporter_build_info", "gauge", "rigwatch exporter version; always 1."),
    (
        "rigwatch_scrape_collector_duration_seconds",
        "gauge",
        "Seconds the collector took in this scrape.",
    ),
    (
        "rigwatch_scrape_collector_success",
        "gauge",
        "1 when the collector finished without error inside the scrape deadline.",
    ),
)


@dataclass
class UnitOutcome:
    """What one unit produced for a scrape: done=False means it missed the deadline."""

    key: str
    done: bool
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


class Collector(Protocol):
    name: str

    def plan(self) -> list[tuple[str, Callable[[], Any]]]:
        """The units of work for this scrape: (key, function) pairs; keys are unique."""

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        """Families from the units' outcomes, and whether the collector fully succeeded."""

    def close(self) -> None: ...


class _Run:
    __slots__ = ("started", "finished", "value", "error", "done")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.finished = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Worker:
    def __init__(self, key: str, runner: UnitRunner) -> None:
        self.key = key
        self.runner = runner
        self.current: _Run | None = None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"unit:{key}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                run, fn = self.inbox.get(timeout=WORKER_IDLE_EXIT_SECONDS)
            except queue.Empty:
                if self.runner._retire(self):
                    return
                continue
            try:
                run.value = fn()
            except BaseException as exc:  # noqa: BLE001 - reported through the outcome
                run.error = exc
            run.finished = time.monotonic()
            self.runner._finished(self)
            run.done.set()


class UnitRunner:
    """Single-flight execution of keyed work units on one worker thread per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}

    def submit(self, key: str, fn: Callable[[], Any]) -> _Run:
        """Start fn for key, or return the run already in flight for that key."""
        with self._lock:
            worker = self._workers.get(key)
            if worker is None:
                worker = self._workers[key] = _Worker(key, self)
            if worker.current is not None:
                return worker.current
            run = worker.current = _Run()
            worker.inbox.put((run, fn))
            return run

    def _finished(self, worker: _Worker) -> None:
        with self._lock:
            worker.current = None

    def _retire(self, worker: _Worker) -> bool:
        with self._lock:
            if worker.current is None and worker.inbox.empty():
                del self._workers[worker.key]
                return True
            return False

    def stuck_units(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers.values() if w.current is not None)


class _Families:
    """The object generate_latest() wants: something with collect()."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class Scraper:
    """Runs the enabled collectors for one scrape and renders text exposition format."""

    def __init__(self, collectors: list[Collector], timeout_seconds: float) -> None:
        self.collectors = collectors
        self.timeout_seconds = timeout_seconds
        self.runner = UnitRunner()
        self._logged: set[tuple[str, str]] = set()
        self._logged_lock = threading.Lock()

    def _log_once(self, key: tuple[str, str], message: str, *args: Any) -> None:
        with self._logged_lock:
            if key in self._logged:
                return
            self._logged.add(key)
        LOG.warning(message, *args)

    def collect(self, timeout_seconds: float | None = None) -> list[Metric]:
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        start = time.monotonic()
        deadline = start + timeout
        submitted: list[tuple[Collector, list[tuple[str, _Run]]]] = []
        for collector in self.collectors:
            try:
                plan = collector.plan()
            except Exception as exc:  # noqa: BLE001 - a broken collector costs only its series
                self._log_once(
                    (collector.name, repr(exc)), "collector %s failed: %r", collector.name, exc
                )
                plan = None
            runs = (
                None if plan is None else [(key, self.runner.submit(key, fn)) for key, fn in plan]
            )
            submitted.append((collector, runs))

        families: list[Metric] = []
        self_samples = [("rigwatch_exporter_build_info", {"version": __version__}, 1.0)]
        for collector, runs in submitted:
            if runs is None:
                labels = {"collector": collector.name}
                self_samples.append(("rigwatch_scrape_collector_duration_seconds", labels, 0.0))
                self_samples.append(("rigwatch_scrape_collector_success", labels, 0.0))
                continue
            outcomes = []
            for key, run in runs:
                # A run that was already going longer than a whole scrape budget when this
                # scrape began is stuck: do not spend this scrape's time waiting for it.
                fresh = run.started >= start - timeout
                if fresh and run.done.wait(max(0.0, deadline - time.monotonic())):
                    outcomes.append(
                        UnitOutcome(key, True, run.value, run.error, run.finished - run.started)
                    )
                    if run.error is not None:
                        self._log_once(
                            (key, repr(run.error)),
                            "collector %s: %s failed: %r",
                            collector.name,
                            key,
                            run.error,
                        )
                else:
                    outcomes.append(UnitOutcome(key, False, seconds=time.monotonic() - start))
                    LOG.debug("collector %s: %s missed the scrape deadline", collector.name, key)
            build_start = time.monotonic()
            try:
                built, ok = collector.build(outcomes)
            except Exception as exc:  # noqa: BLE001
                self._log_once(
                    (collector.name, repr(exc)), "collector %s failed: %r", collector.name, exc
                )
                built, ok = [], False
            ok = ok and all(o.done and o.error is None for o in outcomes)
            seconds = max((o.seconds for o in outcomes), default=0.0)
            seconds += time.monotonic() - build_start
            families.extend(built)
            labels = {"collector": collector.name}
            self_samples.append(("rigwatch_scrape_collector_duration_seconds", labels, seconds))
            self_samples.append(("rigwatch_scrape_collector_success", labels, 1.0 if ok else 0.0))
        families.extend(build_families(SELF_FAMILIES, self_samples))
        return families

    def render(self, timeout_seconds: float | None = None) -> bytes:
        """One scrape in Prometheus text format 0.0.4."""
        return generate_latest(_Families(self.collect(timeout_seconds)))

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()
