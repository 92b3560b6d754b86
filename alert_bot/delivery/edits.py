"""Edits marking a firing message resolved: one attempt at a time, retried on their own (an
edit that fails never holds back the chat's next message), given up after EDIT_ATTEMPTS or
when Telegram refuses (the message was deleted, or already reads like this)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.config import DeliverySettings
from alert_bot.delivery.retrier import Retrier
from alert_bot.delivery.sender import Sender
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import PendingNotification, Store
from alert_bot.telegram.client import ChatMigrated, Permanent, RetryAfter, Sent
from rigwatch.backoff import Backoff
from rigwatch.logs import logger

log = logger("bot", "delivery")

EDIT_ATTEMPTS = 8  # an edit still failing after this many tries is not worth more


@dataclass
class Editor:
    settings: DeliverySettings
    store: Store
    sender: Sender
    retrier: Retrier
    metrics: BotMetrics
    clock: Callable[[], float]

    def edit(self, chat_id: int, row: PendingNotification) -> bool:
        """One attempt at the edit row asks for; True when it is done with (edited or given
        up), False when it waits for another attempt."""
        payload = row.payload
        verdict = self.sender.edit(chat_id, payload["message_id"], payload["text"], payload["html"])
        now = self.clock()
        if isinstance(verdict, Sent):
            self.store.outbox.record_progress({row.id: (1, 0, True)}, now)
            self.metrics.edits.labels("edited").inc()
            return True
        if isinstance(verdict, ChatMigrated):
            self.store.migrations.record(chat_id, verdict.new_chat_id, now)
            return False
        if isinstance(verdict, Permanent) or row.attempts + 1 >= EDIT_ATTEMPTS:
            log.info(
                "message %s in chat %s not edited: %s", payload["message_id"], chat_id, verdict
            )
            self.store.outbox.give_up(row.id, str(verdict))
            self.metrics.edits.labels("given_up").inc()
            return True
        if isinstance(verdict, RetryAfter):
            self.metrics.rate_limited.inc()
            self.retrier.limiter.block(chat_id, max(verdict.seconds or 1.0, 0.1))
            delay = max(verdict.seconds or 1.0, 0.1)
        else:
            # The edit's own attempts count its failures: the chat is not held back.
            backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
            delay = backoff.delay(row.attempts + 1)
        self.store.outbox.defer([row.id], now + delay, str(verdict))
        return False
