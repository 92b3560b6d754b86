"""What Prometheus knows about an alert beyond Alertmanager's fields, asked once per alert:
its value now, for its resolved notice (the value its rule names: the value_query annotation, or
the measured side of its expression; alert_queries.py says how, as for its chart; and the one
series of it that is the alert's card, host or disk); and when its condition began
(Prometheus's ALERTS_FOR_STATE at the moment it fired holds the moment it became pending:
Alertmanager's startsAt comes after the rule's `for:` wait), so "lasted" and "since" count
from when the trouble began.

A notice must never wait on Prometheus: a query has a short timeout, a Prometheus
that failed or answered slowly is not asked again for a minute (a backlog of notices waits at
most one timeout a minute), and any trouble means no value: the notice goes out without it.
Each resolved alert is asked about once; its notice rendered again (a retry, a message packed
anew) reuses the answer."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from alert_bot.alerts.alert_queries import AlertQueries, alert_queries
from alert_bot.alerts.model import Alert, valid_time
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import PrometheusClient
from alert_bot.upstream.units import Unit
from rigwatch.logs import logger

log = logger("bot", "current")

QUERY_TIMEOUT = 2.0  # seconds; a notice waits at most this long for its "now" line
SLOW = 0.5  # seconds; an answer slower than this also leaves Prometheus alone for a while
PAUSE_AFTER_FAILURE = 60.0  # seconds Prometheus is left alone after it failed or was slow
REMEMBERED = 512  # resolved alerts whose answer is kept
# Labels an alerting rule sets itself: the alert's value says nothing of the series'.
RULE_LABELS = frozenset({"alertname", "severity", "__name__"})


def measured_expression(alert: Alert) -> AlertQueries | None:
    """What the alert measures, or None when the alert carries no query or compares nothing
    (absent(), a heartbeat, "seen before unless seen now"): then there is no value to show."""
    queries = alert_queries(alert)
    return queries if queries is not None and queries.compares else None


def alert_series(result: list[dict], labels: Mapping[str, str]) -> dict | None:
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


class PrometheusAnswers:
    """One answer per alert from Prometheus, remembered; none while Prometheus is left alone
    after a failure or a slow answer. Subclasses say what to ask (_ask) and which alerts share
    an answer (_key)."""

    def __init__(
        self,
        prometheus: PrometheusClient | None,
        timeout: float = QUERY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.prometheus = prometheus
        self.timeout = timeout
        self.clock = clock
        self._answers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def _key(self, alert: Alert) -> tuple[str, str]:
        raise NotImplementedError

    def _ask(self, alert: Alert) -> Any:
        raise NotImplementedError

    def __call__(self, alert: Alert) -> Any:
        key = self._key(alert)
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

    def _query(self, expr: str, at: float | None = None) -> list[dict] | None:
        """expr's answer, or None when Prometheus failed (then it is left alone a while)."""
        assert self.prometheus is not None
        asked = self.clock()
        try:
            result = self.prometheus.query(expr, at=at, timeout=self.timeout)
        except UpstreamError as exc:
            self._pause(f"{exc}")
            return None
        if self.clock() - asked > SLOW:
            # A slow answer still counts, but a backlog of notices must not wait on many more.
            self._pause(f"Prometheus took {self.clock() - asked:.1f} s to answer")
        return result

    def _pause(self, why: str) -> None:
        self._paused_until = self.clock() + PAUSE_AFTER_FAILURE
        log.warning("notices go without what Prometheus adds for a minute: %s", why)


class CurrentValues(PrometheusAnswers):
    """The value now of resolved alerts, with the unit their charts use."""

    def _key(self, alert: Alert) -> tuple[str, str]:
        return (alert.fingerprint, alert.ends_at)

    def _ask(self, alert: Alert) -> tuple[Unit, float] | None:
        measured = measured_expression(alert)
        if measured is None or self.prometheus is None:
            return None
        result = self._query(measured.value)
        series = alert_series(result or [], alert.labels)
        return (measured.unit, series["value"]) if series is not None else None


class Beginnings(PrometheusAnswers):
    """When an alert's condition began (unix seconds): the activeAt Prometheus keeps in
    ALERTS_FOR_STATE, read at the moment the alert fired; None when Prometheus cannot say
    (another store, the series gone from its retention, labels that match no single series),
    and then the caller keeps Alertmanager's startsAt."""

    def _key(self, alert: Alert) -> tuple[str, str]:
        return (alert.fingerprint, alert.starts_at)

    def _ask(self, alert: Alert) -> float | None:
        fired = valid_time(alert.starts_at)
        name = alert.alertname
        if fired is None or not name or self.prometheus is None:
            return None
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        result = self._query(f'ALERTS_FOR_STATE{{alertname="{escaped}"}}', at=fired.timestamp())
        # The alert's own series: every label it has is the alert's (Alertmanager's copy may
        # carry more, e.g. Prometheus's external labels).
        labels = alert.labels
        mine = [
            r
            for r in result or []
            if all(labels.get(k) == v for k, v in r["metric"].items() if k != "__name__")
        ]
        if len(mine) != 1:
            return None
        began = mine[0]["value"]
        # activeAt is at or before the moment it fired; anything else is not an answer.
        return began if 0 < began <= fired.timestamp() + 1 else None
