"""One message to Telegram and what its answer means: sent (the ledger records it), a chat
migrated, a failure to retry, or a refusal: the message once more as plain text, then, packed
with others, one notification at a time to find the bad one, else a dead letter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from alert_bot.delivery.dead_letters import DeadLetters
from alert_bot.delivery.ledger import Ledger
from alert_bot.delivery.planner import Plan
from alert_bot.delivery.retrier import Retrier
from alert_bot.delivery.sender import Sender
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store
from alert_bot.telegram.client import ChatMigrated, Failure, Permanent, Sent
from alert_bot.telegram.html import to_plain_text
from alert_bot.telegram.types import Button
from rigwatch.logs import logger

log = logger("bot", "delivery")


def _reply_gone(failure: Failure) -> bool:
    return "message to reply not found" in failure.description.lower()


@dataclass
class Verdicts:
    sender: Sender
    ledger: Ledger
    retrier: Retrier
    dead_letters: DeadLetters
    store: Store
    metrics: BotMetrics
    clock: Callable[[], float]
    solo: set[int] = field(default_factory=set)  # chats whose refused message is isolated

    def send(
        self,
        chat_id: int,
        plan: Plan,
        buttons: list[list[Button]] | None,
        reply_to: int | None,
    ) -> bool:
        """The planned message, as a reply where it has a message to reply to; True when it
        went out (or its refusal was dealt with)."""
        verdict = self.sender.send(
            chat_id, plan.message.html, True, plan.thread_id, buttons, reply_to
        )
        if isinstance(verdict, Permanent) and reply_to is not None and _reply_gone(verdict):
            # The firing message is gone or too old to reply to: the notice goes out plainly.
            reply_to = None
            verdict = self.sender.send(chat_id, plan.message.html, True, plan.thread_id, buttons)
        if isinstance(verdict, Permanent):
            return self.after_refusal(chat_id, plan, buttons, verdict, reply_to)
        return self.after(chat_id, plan, verdict)

    def after(
        self, chat_id: int, plan: Plan, verdict: Sent | Failure, as_html: bool = True
    ) -> bool:
        """Sent, chat migrated, or a failure to retry; True when the message went out."""
        if isinstance(verdict, Sent):
            self.ledger.delivered(chat_id, plan, verdict.message_id, as_html)
            self.solo.discard(chat_id)
            return True
        if isinstance(verdict, ChatMigrated):
            log.warning("chat %s became supergroup %s; following it", chat_id, verdict.new_chat_id)
            self.store.migrations.record(chat_id, verdict.new_chat_id, self.clock())
            return False
        self.retrier.failed(chat_id, plan.rows, verdict, self.clock())
        return False

    def after_refusal(
        self,
        chat_id: int,
        plan: Plan,
        buttons: list[list[Button]] | None,
        refusal: Permanent,
        reply_to: int | None = None,
    ) -> bool:
        """Telegram refused the request itself (400): plain text once, then dead letters. The
        chat refused the bot (403): no form of the message can pass, so every notification of
        the message goes to the dead letters at once, with one report in another chat."""
        self.metrics.delivery_failures.labels(str(refusal.status or 400)).inc()
        if refusal.status == 403:
            log.warning("chat %s refuses the bot: %s", chat_id, refusal.description)
            self.solo.discard(chat_id)
            self.dead_letters.move(chat_id, plan.rows, plan.message, refusal)
            return True
        log.warning("Telegram refused a message for chat %s: %s", chat_id, refusal.description)
        plain = self.sender.send(
            chat_id, to_plain_text(plan.message.html), False, plan.thread_id, buttons, reply_to
        )
        if not isinstance(plain, Permanent):
            self.after(chat_id, plan, plain, as_html=False)
            return isinstance(plain, Sent)
        self.metrics.delivery_failures.labels("400").inc()
        if len(plan.rows) > 1:
            # Packed with others: retry one notification at a time to find the bad one.
            self.solo.add(chat_id)
            return True
        self.solo.discard(chat_id)
        self.dead_letters.move(chat_id, plan.rows[:1], plan.message, plain)
        return True
