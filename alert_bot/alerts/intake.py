"""Taking in one Alertmanager notification: read it into typed alerts, let the Watchdog alert
feed the dead man's switch, route the rest to their chats and store them durably (a repeat
within the dedupe window stored once), then wake delivery. The answer tells Alertmanager
whether to retry: 2xx only once the notification is committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.alerts.watchdog import Watchdog
from alert_bot.alerts.webhook import PayloadError, dedupe_key, parse_notification, route
from alert_bot.config import Config
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store, StoreError
from rigwatch.logs import logger

log = logger("bot", "app")

PRUNE_EVERY_S = 600.0  # dedupe keys and delivered rows past their window are dropped this often


@dataclass(frozen=True)
class IntakeResult:
    status: int
    text: str


class Intake:
    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: BotMetrics,
        watchdog: Watchdog,
        wake: Callable[[], None],
        clock: Callable[[], float],
    ):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.watchdog = watchdog
        self.wake = wake
        self.clock = clock
        self._last_prune = 0.0

    def take(self, body: bytes) -> IntakeResult:
        """Validate, store durably, then answer; 2xx only after the commit."""
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            self.metrics.rejected.labels("bad_payload").inc()
            return IntakeResult(400, f"bad notification: {exc}\n")
        now = self.clock()
        alerts = notification.alerts
        heartbeat = [a for a in alerts if self.watchdog.is_watchdog(a)]
        others = [a for a in alerts if not self.watchdog.is_watchdog(a)]
        try:
            beating = [a for a in heartbeat if a.status == "firing"]
            if beating:
                self.watchdog.heartbeat(dict(beating[0].labels))
            stored = True
            destinations = []
            if others:
                destinations = route(notification.with_alerts(others), self.config)
                stored = self.store.outbox.add(
                    destinations, now, dedupe_key(notification), self.config.dedupe_window
                )
            if now - self._last_prune > PRUNE_EVERY_S:
                self._last_prune = now
                self.store.prune(now, self.config.dedupe_window)
        except StoreError as exc:
            log.error("could not store a notification: %s", exc)
            return IntakeResult(503, "store unavailable, retry later\n")
        self.metrics.received.inc()
        if not stored:
            self.metrics.duplicates.inc()
            return IntakeResult(200, "duplicate, already stored\n")
        self.metrics.stored.inc(len(destinations))
        self.wake()
        return IntakeResult(200, "stored\n")
