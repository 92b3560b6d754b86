"""When the scheduled reports go out: the daily digest once a local day at digest.at, the weekly
card-health report once a local week from health.day at health.at. Each is late after downtime,
never sent twice (the period sent is kept in the store, set in the same transaction as the
messages), and postponed while Prometheus cannot answer: a report is never sent without its data.
The run watch asks `due` on each of its cycles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from alert_bot.config import Config
from alert_bot.reports.digest import digest_text
from alert_bot.reports.health import weekly_notices
from alert_bot.runs.energy import local
from alert_bot.runs.table import RunTable
from alert_bot.store import NewNotification, Store
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import PrometheusClient
from rigwatch.logs import logger

log = logger("bot", "runs")

DIGEST_KEY = "digest_last_day"
HEALTH_KEY = "health_last_week"  # the Monday (local) of the last week reported


class Reports:
    def __init__(self, config: Config, store: Store, prometheus: PrometheusClient):
        self.config = config
        self.store = store
        self.prometheus = prometheus
        self.table = RunTable(store)
        self._postponed: set[tuple[str, str]] = set()  # reports waiting for data

    def due(self, now: float) -> bool:
        """Queue whichever report is due; True when one was queued."""
        digest = self.digest(now)
        health = self.health(now)
        return digest or health

    def digest(self, now: float) -> bool:
        """The daily digest, once a local day at digest.at (late after downtime, never twice)."""
        minute = self.config.digest_minute
        if minute is None:
            return False
        when = local(self.config, now)
        if when.hour * 60 + when.minute < minute:
            return False

        def notices() -> list[NewNotification]:
            text = digest_text(self.prometheus, self.config, self.table, now)
            return [
                NewNotification(
                    self.config.default_chat_id,
                    self.config.default_thread_id,
                    "notice",
                    {"html": text},
                )
            ]

        return self._once(DIGEST_KEY, when.date().isoformat(), notices, now)

    def health(self, now: float) -> bool:
        """The weekly card-health report, once a local week (weeks start on Monday) from
        health.day at health.at."""
        settings = self.config.health
        if not settings.enabled:
            return False
        when = local(self.config, now)
        monday = when.date() - dt.timedelta(days=when.weekday())
        if (when.weekday(), when.hour * 60 + when.minute) < (settings.weekday, settings.minute):
            return False
        return self._once(
            HEALTH_KEY,
            monday.isoformat(),
            lambda: weekly_notices(self.prometheus, self.config, now),
            now,
        )

    def _once(
        self, key: str, period: str, notices: Callable[[], list[NewNotification]], now: float
    ) -> bool:
        """Queue a report's notices once per period; Prometheus unable to answer postpones it to
        the next cycle."""
        if self.store.state.get(key) == period:
            return False
        try:
            built = notices()
        except UpstreamError as exc:
            if (key, period) not in self._postponed:  # once per report, not every cycle
                self._postponed.add((key, period))
                log.warning("%s for %s postponed until Prometheus answers: %s", key, period, exc)
            return False
        return self.table.queue_once(key, period, built, now) and bool(built)
