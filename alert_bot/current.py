"""What an alert's value is now, for its resolved notice: the value its rule names (the
value_query annotation, or the measured side of its expression; alert_queries.py says how, as
for its chart) queried at this moment, and the one series of it that is the alert's card, host
or disk.

A resolved notice must never wait on Prometheus: a query has a short timeout, a Prometheus
that failed or answered slowly is not asked again for a minute (a backlog of notices waits at
most one timeout a minute), and any trouble means no value: the notice goes out without it.
Each resolved alert is asked about once; its notice rendered again (a retry, a message packed
anew) reuses the answer."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from alert_bot.alert_queries import AlertQueries, alert_queries
from alert_bot.units import Unit
from alert_bot.upstream import PrometheusClient, UpstreamError
from rigwatch.logs import logger

log = logger("bot", "current")

QUERY_TIMEOUT = 2.0  # seconds; a notice waits at most this long for its "now" line
SLOW = 0.5  # seconds; an answer slower than this also leaves Prometheus alone for a while
PAUSE_AFTER_FAILURE = 60.0  # seconds Prometheus is left alone after it failed or was slow
REMEMBERED = 512  # resolved alerts whose answer is kept
# Labels an alerting rule sets itself: the alert's value says nothing of the series'.
RULE_LABELS = frozenset({"alertname", "severity", "__name__"})


def measured_expression(alert: dict) -> AlertQueries | None:
    """What the alert measures, or None when the alert carries no query or compares nothing
    (absent(), a heartbeat, "seen before unless seen now"): then there is no value to show."""
    queries = alert_queries(alert)
    return queries if queries is not None and queries.compares else None


def alert_series(result: list[dict], labels: dict[str, str]) -> dict | None:
    """The one series whose labels agree with every label the alert shares with it, or None
    when none or several do (another card's value must never stand in for this one's)."""
    matching = [
        r
        for r in result
        if all(
            labels[name] == value
            for name, value in r["metric"].items()
            if name in labels and name not in RULE_LABELS
        )
    ]
    return matching[0] if len(matching) == 1 else None


class CurrentValues:
    """The value now of resolved alerts, with the unit their charts use."""

    def __init__(
        self,
        prometheus: PrometheusClient | None,
        timeout: float = QUERY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.prometheus = prometheus
        self.timeout = timeout
        self.clock = clock
        self._answers: OrderedDict[tuple[str, str], tuple[Unit, float] | None] = OrderedDict()
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def __call__(self, alert: dict) -> tuple[Unit, float] | None:
        key = (alert.get("fingerprint", ""), alert.get("endsAt", ""))
        with self._lock:
            if key in self._answers:
                return self._answers[key]
        if self.prometheus is None or self.clock() < self._paused_until:
            return None
        answer = self._ask(alert)
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > REMEMBERED:
                self._answers.popitem(last=False)
        return answer

    def _ask(self, alert: dict) -> tuple[Unit, float] | None:
        measured = measured_expression(alert)
        if measured is None or self.prometheus is None:
            return None
        asked = self.clock()
        try:
            result = self.prometheus.query(measured.value, timeout=self.timeout)
        except UpstreamError as exc:
            self._pause(f"{exc}")
            return None
        if self.clock() - asked > SLOW:
            # A slow answer still counts, but a backlog of notices must not wait on many more.
            self._pause(f"Prometheus took {self.clock() - asked:.1f} s to answer")
        series = alert_series(result, alert["labels"])
        return (measured.unit, series["value"]) if series is not None else None

    def _pause(self, why: str) -> None:
        self._paused_until = self.clock() + PAUSE_AFTER_FAILURE
        log.warning("resolved notices go without the value now for a minute: %s", why)
