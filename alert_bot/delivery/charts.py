"""The chart loop: after Telegram accepted a message with firing critical alerts, their charts
are drawn and sent as replies to it, on a thread of their own, so that their Prometheus queries
(up to charts.timeout each) never hold back the text of any chat's next message."""

from __future__ import annotations

import contextlib
import html
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.alerts.messages import OutgoingMessage
from alert_bot.alerts.model import Alert
from alert_bot.alerts.render import alert_place
from alert_bot.charts.queries import alert_chart
from alert_bot.config import Config
from alert_bot.i18n import _, ngettext
from alert_bot.service.loop import BotLoop
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store
from alert_bot.telegram.client import RetryAfter, TelegramClient, TelegramError
from alert_bot.telegram.flood import FloodLimiter
from alert_bot.telegram.html import utf16_len
from alert_bot.upstream.prometheus import PrometheusClient
from rigwatch.logs import logger

log = logger("bot", "charts")

CAPTION_LIMIT = 1024
CHARTS_WAITING = 20  # charts queued behind a slow Prometheus before new ones are skipped


@dataclass(frozen=True)
class ChartJob:
    """Charts to draw for the firing critical alerts of a message Telegram accepted."""

    chat_id: int
    thread_id: int | None
    alerts: list[Alert]
    message_id: int


class ChartWorker(BotLoop):
    thread_name = "charts"

    def __init__(
        self,
        config: Config,
        store: Store,
        telegram: TelegramClient,
        metrics: BotMetrics,
        limiter: FloodLimiter,
        prometheus: PrometheusClient | None,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.telegram = telegram
        self.limiter = limiter
        self.prometheus = prometheus
        self._jobs: queue.Queue[ChartJob | None] = queue.Queue(maxsize=CHARTS_WAITING)

    def offer(
        self, chat_id: int, thread_id: int | None, message: OutgoingMessage, message_id: int
    ) -> None:
        """A message went out: queue charts for its firing critical alerts, if any are due."""
        charts = self.config.charts
        if not charts.enabled or self.prometheus is None or charts.max_per_message <= 0:
            return
        if message.compact:
            return  # a storm: a chart per alert would flood the chat; /graph has them
        alerts = [
            a
            for a in message.alerts
            if a.status == "firing" and a.labels.get("severity") == "critical"
        ][: charts.max_per_message]
        if not alerts:
            return
        try:
            self._jobs.put_nowait(ChartJob(chat_id, thread_id, alerts, message_id))
        except queue.Full:
            log.warning("%d charts already waiting: none for chat %s", CHARTS_WAITING, chat_id)

    def _interrupt(self) -> None:
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            for alert in job.alerts:
                try:
                    self._send_chart(job, alert)
                except Exception:  # noqa: BLE001 - a chart never stops the next ones
                    log.exception("chart for chat %s failed", job.chat_id)

    def _send_chart(self, job: ChartJob, alert: Alert) -> None:
        charts = self.config.charts
        if self.prometheus is None:
            return
        try:
            png = alert_chart(
                self.prometheus,
                alert,
                charts.range_seconds,
                self.clock(),
                charts.timeout,
                self.config.zone,
            )
        except Exception as exc:  # noqa: BLE001 - a chart never holds back the text
            log.warning("no chart for %s: %s", alert.alertname, exc)
            return
        if png is None:
            return
        labels = alert.labels
        caption = f"📈 <b>{html.escape(alert.alertname)}</b>"
        for place in alert_place(labels, ("rig", "gpu")):
            caption += f" · {html.escape(place)}"
        minutes = int(charts.range_seconds // 60)
        caption += ngettext(" — last {count} min", " — last {count} min", minutes).format(
            count=minutes
        )
        if utf16_len(caption) > CAPTION_LIMIT:
            caption = _("📈 chart")
        slot = self.limiter.reserve(job.chat_id, self._stop, limit=30)
        if slot is None:
            return
        try:
            self.telegram.send_photo(job.chat_id, png, caption, True, job.thread_id, job.message_id)
        except TelegramError as exc:
            log.warning("chart for chat %s not sent: %s", job.chat_id, exc)
            if isinstance(exc.failure, RetryAfter):
                self.metrics.rate_limited.inc()
                self.limiter.block(job.chat_id, exc.failure.seconds or 1.0)
        finally:
            slot.finish()
