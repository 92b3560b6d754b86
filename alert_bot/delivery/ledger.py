"""What a message Telegram accepted leaves behind: each notification's progress marked in the
outbox (only now: at-least-once), the message remembered for replies and edits, the delivery
metrics, the chat's retry state reset, and the chart offered for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.delivery.charts import ChartWorker
from alert_bot.delivery.planner import Plan, progress_after
from alert_bot.delivery.retrier import Retrier
from alert_bot.delivery.threads import record_delivery
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store
from alert_bot.telegram.html import to_plain_text


@dataclass
class Ledger:
    store: Store
    metrics: BotMetrics
    retrier: Retrier
    charts: ChartWorker | None
    clock: Callable[[], float]
    # when an alert's trouble began, what "lasted" counts from
    began: Callable[[dict], float | None] | None = None

    def delivered(self, chat_id: int, plan: Plan, message_id: int, as_html: bool) -> None:
        now = self.clock()
        progress = progress_after(plan)
        self.store.outbox.record_progress(progress, now)
        sent_text = plan.message.html if as_html else to_plain_text(plan.message.html)
        record_delivery(
            self.store,
            chat_id,
            plan.thread_id,
            plan.message,
            message_id,
            sent_text,
            as_html,
            now,
            self.began,
        )
        completed_alerts = sum(
            1 for b in plan.message.blocks if b.completes_alert and b.alert is not None
        )
        self.metrics.messages_delivered.inc()
        self.metrics.alerts_delivered.inc(completed_alerts)
        created = {r.id: r.created_at for r in plan.rows}
        for row_id, (_count, _parts, finished) in progress.items():
            if finished:
                self.metrics.latency.observe(max(0.0, now - created[row_id]))
        self.retrier.succeeded(chat_id)
        if self.charts is not None:
            self.charts.offer(chat_id, plan.thread_id, plan.message, message_id)
