"""Dead letters: a notification Telegram refused as HTML and as plain text is moved out of the
outbox, counted, and reported in words to its chat, or, when the chat itself cannot be
reached, to another configured chat (never only to the dead one)."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.alerts.messages import OutgoingMessage
from alert_bot.alerts.model import Notification
from alert_bot.config import Config
from alert_bot.i18n import _
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import NewNotification, PendingNotification, Store
from alert_bot.telegram.client import Permanent
from rigwatch.logs import logger

log = logger("bot", "delivery")


def unreachable(description: str) -> bool:
    """Whether Telegram refused because of the chat itself, not the message."""
    text = description.lower()
    return "chat not found" in text or "kicked" in text or "blocked" in text


@dataclass
class DeadLetters:
    config: Config
    store: Store
    metrics: BotMetrics
    clock: Callable[[], float]

    def move(
        self,
        chat_id: int,
        rows: list[PendingNotification],
        message: OutgoingMessage,
        refusal: Permanent,
    ) -> None:
        """Dead-letter the rows and queue the report about them in the same transaction: the
        report is never lost to a restart between the two, and the queue is never seen empty
        while it is still to be queued."""
        now = self.clock()
        ids = [row.id for row in rows]
        unreachable_chat = refusal.status == 403 or unreachable(refusal.description)
        report = self._report(chat_id, rows, refusal, unreachable_chat)
        moved = self.store.outbox.dead_letter(
            ids, message.html, refusal.description, now, [report] if report else []
        )
        if not moved:
            return
        self.metrics.dead_letters.inc(moved)
        if unreachable_chat:
            self.metrics.chat_unreachable.labels(str(chat_id)).inc()
        log.error(
            "notification %s for chat %s dead-lettered: %s",
            ", ".join(map(str, ids)),
            chat_id,
            refusal.description,
        )
        if unreachable_chat and report is None and not _is_report(rows):
            log.error("chat %s is unreachable and no other chat is configured", chat_id)

    def _report(
        self,
        chat_id: int,
        rows: list[PendingNotification],
        refusal: Permanent,
        unreachable_chat: bool,
    ) -> NewNotification | None:
        """The notice saying what was dead-lettered and why, for the chat that can read it."""
        if _is_report(rows):
            return None  # a report about a dead letter that itself failed: do not loop
        report_chat, report_thread = chat_id, rows[0].thread_id
        if unreachable_chat:
            # The report must reach someone: never (only) the chat that cannot be reached.
            others = [
                c
                for c in (self.config.default_chat_id, *(r.chat_id for r in self.config.routes))
                if c != chat_id
            ]
            if not others:
                return None
            report_chat, report_thread = others[0], None
        text = _report_text(rows, refusal)
        if report_chat != chat_id:
            text += "\n" + _(
                "Telegram cannot reach chat {chat}: check its id and the bot's membership."
            ).format(chat=chat_id)
        return NewNotification(report_chat, report_thread, "notice", {"html": text, "report": True})


def _is_report(rows: list[PendingNotification]) -> bool:
    return any(row.payload.get("report") for row in rows)


def _report_text(rows: list[PendingNotification], refusal: Permanent) -> str:
    names = sorted(
        {a.alertname or "?" for row in rows for a in Notification.from_json(row.payload).alerts}
    )
    if refusal.status == 403:
        refused = _("Telegram refused it: {reason}")
    else:
        refused = _("Telegram refused it twice (as HTML and as plain text): {reason}")
    text = (
        _("⚠️ <b>A notification could not be delivered</b>")
        + "\n"
        + refused.format(reason=html.escape(refusal.description[:300]))
        + "\n"
    )
    if names:
        text += _("Alerts: {names}").format(names=html.escape(", ".join(names)[:500])) + "\n"
    return text + _("It is kept in the bot's dead-letter table (notification {id}).").format(
        id=", ".join(str(row.id) for row in rows)
    )
