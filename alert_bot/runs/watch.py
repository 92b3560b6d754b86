"""The run watch: every runs.interval it reads the GPU processes Prometheus sees, records new
runs, and reports a run as ended once its rig's exporter is being scraped, its process list
is readable and the process is gone; never while the data is missing."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from alert_bot.config import Config
from alert_bot.runs import messages
from alert_bot.runs.energy import card_energy
from alert_bot.runs.table import Run, RunTable
from alert_bot.service.loop import BotLoop
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store, StoreError
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import PrometheusClient, quote
from rigwatch.logs import logger

log = logger("bot", "runs")

PROCESSES = "rigwatch_gpu_process_start_time_seconds"
# The processes in each rig's latest scrape. A Prometheus restarted after an outage answers
# with the last samples from before it stopped (no staleness markers were written) until it
# scrapes again: a process counts only when its sample is as new as its rig's latest one.
PRESENT = (
    f"{PROCESSES} and on (job, instance, gpu, uuid, pid) (timestamp({PROCESSES})"
    " >= on (job, instance) group_left ()"
    ' timestamp(rigwatch_scrape_collector_success{collector="gpu_process"}))'
)
# Rigs whose process list is trustworthy right now: scraped, NVML up, the collector succeeded.
READABLE = (
    'rigwatch_scrape_collector_success{collector="gpu_process"} == 1'
    " and on (job, instance) rigwatch_nvml_up == 1"
)
SINCE_KEY = "runs_watch_since"
KEEP_ENDED_SECONDS = 30 * 86400.0
START_TOLERANCE = 2.0  # seconds within which two start times of one pid are one run
# A start time the watch can use: after 1970 and no later than a day ahead of the bot's clock.
# Any pushing rig can send -1e300, 1e300 or +Inf; such a series is skipped, never recorded.
FUTURE_SLACK = 86400.0


def usable_start(value: float, now: float) -> bool:
    """Whether a process start-time sample is a moment the watch can record and format."""
    return math.isfinite(value) and 0 < value <= now + FUTURE_SLACK


def regex_of(values: list[str]) -> str:
    return "|".join(quote(re.escape(v)) for v in values)


class CountingPrometheus:
    """The Prometheus client with a count of the queries made through it (for the bench)."""

    def __init__(self, prometheus: PrometheusClient):
        self.inner = prometheus
        self.queries = 0

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        self.queries += 1
        return self.inner.query(expr, at)

    def samples(self, expr: str, at: float | None = None) -> list[dict]:
        self.queries += 1
        return self.inner.samples(expr, at)


class RunWatch(BotLoop):
    thread_name = "runs"
    join_timeout = 10.0

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: BotMetrics,
        prometheus: PrometheusClient,
        notify: Callable[[], None],
        clock: Callable[[], float] = time.time,
        reports: Callable[[float], bool] | None = None,
    ):
        super().__init__(config, store, metrics, clock)
        self.prometheus = CountingPrometheus(prometheus)
        self.notify = notify
        self.table = RunTable(store)
        self._last_prune = 0.0
        self._warned: set[tuple[str, str, str]] = set()  # bad series already logged once
        # The scheduled reports (digest, weekly health), asked each cycle: True when queued.
        self.reports = reports

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
            except (UpstreamError, StoreError) as exc:
                # Nothing is decided without data: the next cycle tries again.
                log.warning("run watch cycle skipped: %s", exc)
            except Exception:  # noqa: BLE001 - the watch must outlive a bad cycle
                log.exception("run watch cycle failed")
            self._stop.wait(self.config.runs.interval)

    def _query(self, expr: str, at: float | None = None) -> list[dict]:
        return self.prometheus.query(expr, at)

    def cycle(self) -> None:
        """One look: new runs recorded, present ones refreshed, gone ones ended."""
        now = self.clock()
        since = self.store.state.get(SINCE_KEY)
        if since is None:
            self.store.state.set(SINCE_KEY, repr(now))
            since_time = now
        else:
            since_time = float(since)
        present = self._present(now)
        readable = {r["metric"].get("instance", "") for r in self._query(READABLE)}
        known = {}
        for run in self.table.running():
            if usable_start(run.start_time, now):
                known[run.key] = run
            else:  # recorded by an older bot before bad start times were refused
                log.warning("run %s pid %s: unusable start time dropped", run.instance, run.pid)
                self.table.end(run, now, None, [], now)
        present = self._same_runs(present, known)
        queued = False
        models: dict[tuple[str, str], str] | None = None
        still: list[Run] = []
        for key, run in present.items():
            old = known.get(key)
            if old is not None:
                old.cards.update({u: c for u, c in run.cards.items() if u not in old.cards})
                still.append(old)
                continue
            if models is None:
                models = {
                    (r["metric"].get("instance", ""), r["metric"].get("uuid", "")): r["metric"].get(
                        "name", ""
                    )
                    for r in self._query("rigwatch_gpu_info")
                }
            for uuid, card in run.cards.items():
                card["name"] = models.get((run.instance, uuid), "")
            notice = []
            if self.config.runs.notify_start and run.start_time >= since_time - 1:
                notice = messages.destinations(
                    self.config, run, messages.started_text(self.config, run)
                )
            queued |= self.table.begin(run, notice, now) and bool(notice)
        self.table.seen(still, now)
        for key, run in known.items():
            if key in present or run.instance not in readable:
                continue
            queued |= self._end(run, now)
        if self.reports is not None:
            queued |= self.reports(now)
        if queued:
            self.notify()
        if now - self._last_prune > 3600:
            self._last_prune = now
            self.table.forget_before(now - KEEP_ENDED_SECONDS)

    @staticmethod
    def _same_runs(
        present: dict[tuple[str, int, float], Run], known: dict[tuple[str, int, float], Run]
    ) -> dict[tuple[str, int, float], Run]:
        """Present runs keyed as the store knows them: a start time read again after an
        exporter restart may differ by a second (the kernel's boot time, which it is computed
        from, is whole seconds and can shift), which is the same run, not a new one."""
        by_pid: dict[tuple[str, int], list[Run]] = {}
        for run in known.values():
            by_pid.setdefault((run.instance, run.pid), []).append(run)
        out = {}
        for key, run in present.items():
            if key not in known:
                for old in by_pid.get((run.instance, run.pid), []):
                    if abs(old.start_time - run.start_time) <= START_TOLERANCE:
                        run.start_time = old.start_time
                        key = old.key
                        break
            out[key] = run
        return out

    def _present(self, now: float) -> dict[tuple[str, int, float], Run]:
        runs: dict[tuple[str, int, float], Run] = {}
        for row in self._query(PRESENT):
            metric = row["metric"]
            try:
                pid = int(metric.get("pid", ""))
            except ValueError:
                continue
            instance = metric.get("instance", "")
            if not usable_start(row["value"], now):
                # NaN (the exporter could not read the boot time) or a value no clock can show.
                bad = (instance, metric.get("pid", ""), repr(row["value"]))
                if bad not in self._warned:
                    self._warned.add(bad)
                    log.warning(
                        "run watch: process %s on %s has an unusable start time %r; skipped",
                        bad[1],
                        instance,
                        row["value"],
                    )
                continue
            start = round(row["value"], 2)
            key = (instance, pid, start)
            run = runs.get(key)
            if run is None:
                run = runs[key] = Run(
                    instance=instance,
                    pid=pid,
                    start_time=start,
                    rig=metric.get("rig") or instance,
                    run_name=metric.get("run") or metric.get("process", "") or "?",
                    process=metric.get("process", ""),
                    user=metric.get("user", ""),
                    container=metric.get("container", ""),
                )
            run.cards[metric.get("uuid", "")] = {"gpu": metric.get("gpu", "")}
        return runs

    def _end(self, run: Run, now: float) -> bool:
        ended_at = self._last_sample(run, now)
        duration = ended_at - run.start_time
        if duration < self.config.runs.min_duration:
            self.table.end(run, ended_at, None, [], now)
            return False
        summary = self.summary(run, ended_at)
        text = messages.ended_text(self.config, run, ended_at, summary)
        return self.table.end(
            run, ended_at, summary, messages.destinations(self.config, run, text), now
        )

    def _last_sample(self, run: Run, now: float) -> float:
        """When Prometheus last saw the process (precise to a scrape), else the watch's last
        sight of it."""
        window = int(now - run.last_seen + 2 * self.config.runs.interval + 60)
        rows = self.prometheus.samples(
            f'{PROCESSES}{{instance="{quote(run.instance)}",pid="{run.pid}"}}[{window}s]', now
        )
        stamps = [
            t
            for row in rows
            for t, value in row["values"]
            if abs(value - run.start_time) <= START_TOLERANCE
        ]
        return max(stamps) if stamps else run.last_seen

    def summary(self, run: Run, ended_at: float) -> dict:
        """Peak memory, mean utilisation of its cards, energy and cost, and who else used
        the cards while it ran, from Prometheus at the run's end."""
        window = f"{max(1000, int((ended_at - run.start_time) * 1000))}ms"
        instance = quote(run.instance)
        uuids = regex_of(sorted(run.cards))
        card_selector = f'instance="{instance}",uuid=~"{uuids}"'
        peak = self._query(
            f'max_over_time(rigwatch_gpu_process_memory_bytes{{instance="{instance}",'
            f'pid="{run.pid}"}}[{window}])',
            ended_at,
        )
        util = self._query(
            f"avg_over_time(rigwatch_gpu_utilization_ratio{{{card_selector}}}[{window}])",
            ended_at,
        )
        others = self._query(
            f"max by (pid, run) (max_over_time({PROCESSES}"
            f'{{{card_selector},pid!="{run.pid}"}}[{window}]))',
            ended_at,
        )
        energy = list(
            card_energy(
                self.prometheus,  # type: ignore[arg-type] - the same two methods
                self.config,
                card_selector,
                run.start_time,
                ended_at,
            ).values()
        )
        shared = sorted(
            {f"{r['metric'].get('run') or '?'} (pid {r['metric'].get('pid', '?')})" for r in others}
        )
        return {
            "peak_memory_bytes": max((r["value"] for r in peak), default=None),
            "mean_utilization": sum(r["value"] for r in util) / len(util) if util else None,
            "kwh": sum(c.kwh for c in energy) if energy else None,
            "cost": sum(c.cost for c in energy),
            "estimated": any(c.estimated for c in energy),
            "shared_with": shared,
        }
