"""The scrape: runs every collector's work units against a deadline and renders the exposition.

Units of work (one GPU's readings, the host, the filesystems, ...) run on a few long-lived
"lane" threads, one unit after another, because many threads taking turns on the GIL around
every short NVML call cost more than the calls themselves. When a unit stalls (a hung NVML
call) its lane is abandoned to it and the units queued behind it move to a fresh lane, so a
hung card costs only that card's series. A unit is never run twice at once: a scrape that
finds it still running (another scrape started it, or it hangs) joins that run, so a call that
stays hung costs one stuck thread in total, never one per scrape.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from exporter import __version__
from exporter.exposition import render
from exporter.families import FamilySpec, Sample, build_families, specs
from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "scrape")

LANE_IDLE_EXIT_SECONDS = 300.0
# A unit running longer than this is treated as stalled and its lane handed over.
STALL_SECONDS = 0.25
STALL_CHECK_SECONDS = 0.05

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


@dataclass(frozen=True)
class Unit:
    """One piece of collection work. Units sharing a lane run one after another."""

    key: str
    fn: Callable[[], Any]
    lane: str


@dataclass
class UnitOutcome:
    """What one unit produced for a scrape: done=False means it missed the deadline."""

    key: str
    done: bool
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


def families_from_outcomes(
    spec_table: dict[str, FamilySpec], outcomes: list[UnitOutcome]
) -> list[Metric]:
    """Families from the samples of every unit that finished; a late or failed unit adds none."""
    samples: list[Sample] = []
    for outcome in outcomes:
        if outcome.done and outcome.value:
            samples.extend(outcome.value)
    return build_families(spec_table, samples)


class Collector(Protocol):
    name: str

    def plan(self) -> list[Unit]:
        """The units of work for this scrape; keys are unique across collectors."""

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        """Families from the units' outcomes, and whether the collector fully succeeded."""

    def close(self) -> None: ...


class _Done:
    """A one-shot threading.Event on a single lock, set once by the lane that ran the unit.
    A scrape makes one per unit, and threading.Event (a Condition, a lock per waiter) costs
    several times this to make, set and wait on."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        self._set = True
        self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=timeout):
            self._lock.release()  # and so on to the next waiter (scrapes joining one run)
            return True
        return self._set


class _Run:
    __slots__ = ("unit", "submitted", "started", "finished", "value", "error", "done")

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.submitted = time.monotonic()
        self.started = 0.0
        self.finished = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = _Done()


class _Lane:
    def __init__(self, name: str, runner: UnitRunner) -> None:
        self.name = name
        self.runner = runner
        self.inbox: queue.SimpleQueue[_Run] = queue.SimpleQueue()
        self.current: _Run | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._loop, name=f"lane:{name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        runner = self.runner
        while True:
            try:
                run = self.inbox.get(timeout=LANE_IDLE_EXIT_SECONDS)
            except queue.Empty:
                if runner._retire(self):
                    return
                continue
            with runner._lock:
                self.current = run
                run.started = time.monotonic()
            try:
                run.value = run.unit.fn()
            except BaseException as exc:  # noqa: BLE001 - reported through the outcome
                run.error = exc
            run.finished = time.monotonic()
            with runner._lock:
                self.current = None
                runner._inflight.pop(run.unit.key, None)
                abandoned = self.abandoned
                if abandoned:
                    runner._hand_over(self)
            run.done.set()
            if abandoned:
                return


class UnitRunner:
    """Single-flight execution of keyed units on lane threads, with stall hand-over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._inflight: dict[str, _Run] = {}

    def submit(self, unit: Unit) -> _Run:
        """Queue unit on its lane, or return the run of the same key already in flight."""
        with self._lock:
            run = self._inflight.get(unit.key)
            if run is not None:
                return run
            run = self._inflight[unit.key] = _Run(unit)
            self._lane(unit.lane).inbox.put(run)
            return run

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(name, self)
        return lane

    def _hand_over(self, lane: _Lane) -> None:
        """Move what is queued on an abandoned lane to the live lane of that name (locked)."""
        while True:
            try:
                run = lane.inbox.get_nowait()
            except queue.Empty:
                return
            self._lane(lane.name).inbox.put(run)

    def check_stalls(self, stall_seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            for name, lane in list(self._lanes.items()):
                current = lane.current
                if current is not None and now - current.started > stall_seconds:
                    LOG.debug("unit %s stalled; lane %s handed over", current.unit.key, name)
                    lane.abandoned = True
                    del self._lanes[name]
                    self._hand_over(lane)

    def _retire(self, lane: _Lane) -> bool:
        with self._lock:
            if lane.current is not None or not lane.inbox.empty():
                return False
            if self._lanes.get(lane.name) is lane:
                del self._lanes[lane.name]
            return True


class Scraper:
    """Runs the enabled collectors for one scrape and renders text exposition format."""

    def __init__(
        self,
        collectors: list[Collector],
        timeout_seconds: float,
        after_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.collectors = collectors
        self.timeout_seconds = timeout_seconds
        # Run after each scrape (the NVML session's summary of what the cards do not support).
        self.after_scrape = after_scrape
        self.runner = UnitRunner()
        self._once = OnceLog(LOG)

    def _log_once(self, key: tuple[str, str], message: str, *args: Any) -> None:
        self._once.log(logging.WARNING, key, message, *args)

    def _wait(self, run: _Run, start: float, deadline: float, stall: float) -> bool:
        # A run queued longer than a whole scrape budget before this scrape began is stuck:
        # do not spend this scrape's time waiting for it.
        if run.submitted < start - (deadline - start):
            return run.done.is_set()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return run.done.is_set()
            if run.done.wait(min(remaining, STALL_CHECK_SECONDS)):
                return True
            self.runner.check_stalls(stall)

    def collect(self, timeout_seconds: float | None = None) -> list[Metric]:
        """Fresh families from every enabled collector, answering by the deadline."""
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        start = time.monotonic()
        deadline = start + timeout
        stall = min(STALL_SECONDS, timeout / 4)
        submitted: list[tuple[Collector, list[_Run] | None]] = []
        for collector in self.collectors:
            try:
                runs = [self.runner.submit(unit) for unit in collector.plan()]
            except Exception as exc:  # noqa: BLE001 - a broken collector costs only its series
                self._log_once(
                    (collector.name, repr(exc)), "collector %s failed: %r", collector.name, exc
                )
                runs = None
            submitted.append((collector, runs))

        # Wait newest first: a lane runs its units in order, so once the last one is done the
        # earlier ones are too, and this thread wakes once instead of once per unit.
        finished: dict[int, bool] = {}
        for _, runs in reversed(submitted):
            for run in reversed(runs or ()):
                finished[id(run)] = self._wait(run, start, deadline, stall)

        families: list[Metric] = []
        self_samples = [("rigwatch_exporter_build_info", {"version": __version__}, 1.0)]
        for collector, runs in submitted:
            labels = {"collector": collector.name}
            if runs is None:
                self_samples.append(("rigwatch_scrape_collector_duration_seconds", labels, 0.0))
                self_samples.append(("rigwatch_scrape_collector_success", labels, 0.0))
                continue
            outcomes = []
            for run in runs:
                key = run.unit.key
                if finished[id(run)]:
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
            self_samples.append(("rigwatch_scrape_collector_duration_seconds", labels, seconds))
            self_samples.append(("rigwatch_scrape_collector_success", labels, 1.0 if ok else 0.0))
        families.extend(build_families(SELF_FAMILIES, self_samples))
        if self.after_scrape is not None:
            self.after_scrape()
        return families

    def render(self, timeout_seconds: float | None = None) -> bytes:
        """One scrape in Prometheus text format 0.0.4."""
        return render(self.collect(timeout_seconds))

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()
