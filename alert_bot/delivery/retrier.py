"""The one owner of waiting in delivery: after a failed attempt it decides when the chat's
notifications are tried again (Telegram's retry_after for a 429, exponential backoff with
jitter for anything transient) and holds the chat back until then."""

from __future__ import annotations

from alert_bot.config import DeliverySettings
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Outbox, PendingNotification
from alert_bot.telegram.client import Failure, Malformed, RetryAfter
from alert_bot.telegram.flood import FloodLimiter
from rigwatch.backoff import Backoff
from rigwatch.logs import logger

log = logger("bot", "delivery")

JITTER = 0.5  # many bots must not retry in step: each wait is between half and all of it


class Retrier:
    def __init__(
        self,
        settings: DeliverySettings,
        outbox: Outbox,
        limiter: FloodLimiter,
        metrics: BotMetrics,
    ):
        self.settings = settings
        self.outbox = outbox
        self.limiter = limiter
        self.metrics = metrics
        self._backoff: dict[int, Backoff] = {}
        self._held_until: dict[int, float] = {}

    def wait_for(self, chat_id: int, now: float) -> float:
        """Seconds before this chat may be tried again (0: now)."""
        held = self._held_until.get(chat_id, 0.0) - now
        return max(held, self.limiter.delay(chat_id), 0.0)

    def succeeded(self, chat_id: int) -> None:
        self._backoff.pop(chat_id, None)
        self._held_until.pop(chat_id, None)

    def failed(
        self, chat_id: int, rows: list[PendingNotification], failure: Failure, now: float
    ) -> None:
        """Schedule the next attempt at these notifications after a failure that is not the
        message's fault (a 429, a network error, a 5xx...)."""
        ids = [r.id for r in rows]
        if isinstance(failure, RetryAfter):
            retry_after = max(failure.seconds or 1.0, 0.1)
            self.metrics.rate_limited.inc()
            self.metrics.delivery_failures.labels("429").inc()
            self.limiter.block(chat_id, retry_after)
            self.outbox.defer(ids, now + retry_after, str(failure))
            log.warning(
                "Telegram asked to wait %.1fs before writing to chat %s", retry_after, chat_id
            )
            return
        status = failure.status or 0
        reason = "5xx" if status >= 500 else ("network" if status == 0 else str(status))
        if isinstance(failure, Malformed):
            reason = "malformed"
        self.metrics.delivery_failures.labels(reason).inc()
        backoff = self._backoff.get(chat_id)
        if backoff is None:
            backoff = self._backoff[chat_id] = Backoff(
                self.settings.backoff_initial, self.settings.backoff_max, jitter=JITTER
            )
        delay = backoff.next()
        self._held_until[chat_id] = now + delay
        self.outbox.defer(ids, now + delay, str(failure))
        log.warning("delivery to chat %s failed (%s); retrying in %.1fs", chat_id, failure, delay)
