"""The delivery worker: sends what the store holds to Telegram, oldest first per chat, packing a
backlog into few messages, within flood limits, and marks each notification sent only after
Telegram accepted it (at-least-once: a crash between send and mark resends, never loses).
"""

from __future__ import annotations

import contextlib
import html
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.charts import alert_chart
from alert_bot.config import Config
from alert_bot.loop import BotLoop
from alert_bot.metrics import BotMetrics
from alert_bot.ratelimit import FloodLimiter
from alert_bot.render import (
    AlertRenderer,
    Block,
    OutgoingMessage,
    blocks_for,
    pack,
    silence_matchers,
    to_plain_text,
    utf16_len,
)
from alert_bot.store import NewNotification, PendingNotification, Store, StoreError
from alert_bot.telegram import Button, TelegramClient, TelegramError
from alert_bot.upstream import PrometheusClient

log = logging.getLogger("alert_bot.delivery")

SILENCE_DURATIONS = ("1h", "4h", "24h")
CAPTION_LIMIT = 1024
CHARTS_WAITING = 20  # charts queued behind a slow Prometheus before new ones are skipped


@dataclass(frozen=True)
class ChartJob:
    """Charts to draw for the firing critical alerts of a message Telegram accepted."""

    chat_id: int
    thread_id: int | None
    alerts: list[dict]
    message_id: int


def silence_buttons(short_id: str) -> list[list[Button]]:
    return [[Button(f"🔕 {d}", f"s:{short_id}:{d}") for d in SILENCE_DURATIONS]]


def common_labels(alerts: list[dict]) -> dict[str, str]:
    """Labels every alert shares with the same value: what one silence can cover."""
    if not alerts:
        return {}
    shared = dict(alerts[0]["labels"])
    for alert in alerts[1:]:
        shared = {k: v for k, v in shared.items() if alert["labels"].get(k) == v}
    return shared


def describe_target(labels: dict[str, str], count: int) -> str:
    name = labels.get("alertname", "alerts")
    where = " ".join(
        f"{key} {labels[key]}" for key in ("rig", "instance", "gpu") if labels.get(key)
    )
    text = f"{name} {where}".strip()
    return text if count == 1 else f"{count} alerts: {text}"


class DeliveryWorker(BotLoop):
    thread_name = "delivery"

    def __init__(
        self,
        config: Config,
        store: Store,
        telegram: TelegramClient,
        renderer: AlertRenderer,
        metrics: BotMetrics,
        limiter: FloodLimiter,
        prometheus: PrometheusClient | None = None,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.telegram = telegram
        self.renderer = renderer
        self.limiter = limiter
        self.prometheus = prometheus
        self._wake = threading.Event()
        # Charts are drawn on a thread of their own: their Prometheus queries (up to
        # charts.timeout each) must never hold back the text of any chat's next message.
        self._charts: queue.Queue[ChartJob | None] = queue.Queue(maxsize=CHARTS_WAITING)
        self._chart_thread: threading.Thread | None = None
        self._backoff_until: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._solo: set[int] = set()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        self._chart_thread = threading.Thread(target=self._draw_charts, name="charts", daemon=True)
        self._chart_thread.start()

    def stop(self) -> None:
        super().stop()
        if self._chart_thread is not None:
            self._chart_thread.join(self.join_timeout)

    def _interrupt(self) -> None:
        self._wake.set()
        with contextlib.suppress(queue.Full):
            self._charts.put_nowait(None)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked, wait = self.step()
            except StoreError as exc:
                log.error("delivery paused: %s", exc)
                worked, wait = False, 1.0
            except Exception:  # noqa: BLE001 - the worker must outlive any one bug
                log.exception("delivery step failed")
                worked, wait = False, 1.0
            if not worked:
                self._wake.wait(max(0.01, min(wait, 1.0)))
                self._wake.clear()

    # --- one pass ---------------------------------------------------------------------------

    def step(self) -> tuple[bool, float]:
        """Send at most one message per due chat; returns (sent anything, seconds to wait)."""
        now = self.clock()
        wait = 1.0
        next_due = self.store.outbox.next_due_at()
        if next_due is not None:
            wait = min(wait, max(0.0, next_due - now))
        worked = False
        for chat_id in self.store.outbox.due_chats(now):
            if self._stop.is_set():
                break
            backoff = self._backoff_until.get(chat_id, 0.0) - now
            flood = self.limiter.delay(chat_id)
            if backoff > 0 or flood > 0:
                wait = min(wait, max(backoff, flood))
                continue
            if self._deliver_next(chat_id):
                worked = True
        return worked, wait

    def _plan(self, chat_id: int) -> tuple[list[PendingNotification], OutgoingMessage] | None:
        rows = self.store.outbox.pending_for_chat(chat_id, self.config.delivery.batch_rows)
        if not rows:
            return None
        # Only one forum topic per message; and only one notification while isolating a
        # message Telegram refused.
        rows = [r for r in rows if r.thread_id == rows[0].thread_id]
        if chat_id in self._solo:
            rows = rows[:1]
        settings = self.config.delivery
        pending_alerts = sum(len(r.payload.get("alerts", [None])) - r.alerts_done for r in rows)
        compact = pending_alerts > settings.compact_after_alerts
        now = self.clock()
        budget = settings.max_message_chars
        blocks: list[Block] = []
        for row in rows:
            if row.kind == "notice":
                parts = blocks_for(
                    row.payload["html"], row.id, 0, budget, settings.max_parts_per_alert
                )
                blocks += parts[min(row.parts_done, len(parts) - 1) :]
                continue
            for index in range(row.alerts_done, len(row.payload["alerts"])):
                alert = row.payload["alerts"][index]
                markup = self.renderer.render(alert, row.payload, compact, now)
                parts = blocks_for(
                    markup,
                    row.id,
                    index,
                    budget,
                    settings.max_parts_per_alert,
                    alert,
                    row.payload,
                    title=alert["labels"].get("alertname", ""),
                )
                # Parts of a long alert that already went out are not sent again (its last
                # part always is, should it now render shorter, so that the alert completes).
                skip = min(row.parts_done, len(parts) - 1) if index == row.alerts_done else 0
                blocks += parts[skip:]
            if len(blocks) > 400:  # more than enough for the next message
                break
        if not blocks:
            return None
        return rows, pack(blocks, budget, compact)[0]

    def _deliver_next(self, chat_id: int) -> bool:
        planned = self._plan(chat_id)
        if planned is None:
            return False
        rows, message = planned
        rows_in_message = {b.notification_id for b in message.blocks}
        involved = [r for r in rows if r.id in rows_in_message]
        buttons = self._buttons(message)
        thread_id = involved[0].thread_id
        if any(r.attempts > 0 for r in involved):
            self.metrics.retries.inc()
        try:
            message_id = self._send(chat_id, message.html, True, thread_id, buttons)
        except TelegramError as exc:
            if exc.kind == "permanent":
                return self._after_rejection(chat_id, involved, message, buttons, exc)
            self._after_failure(chat_id, involved, exc)
            return False
        self._after_success(chat_id, involved, message, message_id)
        return True

    def _send(
        self,
        chat_id: int,
        text: str,
        as_html: bool,
        thread_id: int | None,
        buttons: list[list[Button]] | None,
    ) -> int:
        slot = self.limiter.reserve(chat_id, self._stop)
        if slot is None:
            raise TelegramError("transient", "stopping")
        try:
            return self.telegram.send_message(chat_id, text, as_html, thread_id, buttons)
        finally:
            slot.finish()

    def _buttons(self, message: OutgoingMessage) -> list[list[Button]] | None:
        firing = [a for a in message.alerts if a["status"] == "firing"]
        if not firing:
            return None
        labels = common_labels(firing)
        if not labels:
            return None
        short_id = self.store.buttons.save(
            silence_matchers(labels), describe_target(labels, len(firing)), self.clock()
        )
        return silence_buttons(short_id)

    # --- outcomes ---------------------------------------------------------------------------

    def _after_success(
        self,
        chat_id: int,
        rows: list[PendingNotification],
        message: OutgoingMessage,
        message_id: int,
    ) -> None:
        now = self.clock()
        by_id = {r.id: r for r in rows}
        done = {r.id: (r.alerts_done, r.parts_done) for r in rows}
        completed_alerts = 0
        for block in message.blocks:
            if block.completes_alert:
                done[block.notification_id] = (block.alert_index + 1, 0)
                completed_alerts += block.alert is not None
            else:
                done[block.notification_id] = (block.alert_index, block.part_index + 1)
        progress = {}
        for row_id, (count, parts) in done.items():
            total = len(by_id[row_id].payload.get("alerts", [None]))
            progress[row_id] = (count, parts, count >= total)
        self.store.outbox.record_progress(progress, now)
        self.metrics.messages_delivered.inc()
        self.metrics.alerts_delivered.inc(completed_alerts)
        for row_id, (_, _, finished) in progress.items():
            if finished:
                self.metrics.latency.observe(max(0.0, now - by_id[row_id].created_at))
        self._failures.pop(chat_id, None)
        self._backoff_until.pop(chat_id, None)
        self._solo.discard(chat_id)
        self._queue_charts(chat_id, rows[0].thread_id, message, message_id)

    def _after_failure(
        self, chat_id: int, rows: list[PendingNotification], exc: TelegramError
    ) -> None:
        now = self.clock()
        if exc.kind == "rate_limited":
            retry_after = max(exc.retry_after or 1.0, 0.1)
            self.metrics.rate_limited.inc()
            self.metrics.delivery_failures.labels("429").inc()
            self.limiter.block(chat_id, retry_after)
            self.store.outbox.defer([r.id for r in rows], now + retry_after, str(exc))
            log.warning(
                "Telegram asked to wait %.1fs before writing to chat %s", retry_after, chat_id
            )
            return
        if exc.kind == "migrated" and exc.migrate_to_chat_id:
            log.warning(
                "chat %s became supergroup %s; following it", chat_id, exc.migrate_to_chat_id
            )
            self.store.migrations.record(chat_id, exc.migrate_to_chat_id, now)
            return
        status = exc.status or 0
        reason = "5xx" if status >= 500 else ("network" if status == 0 else str(status))
        self.metrics.delivery_failures.labels(reason).inc()
        failures = self._failures.get(chat_id, 0) + 1
        self._failures[chat_id] = failures
        settings = self.config.delivery
        delay = min(settings.backoff_initial * 2 ** (failures - 1), settings.backoff_max)
        delay *= random.uniform(0.5, 1.0)  # jitter: many bots must not retry in step
        self._backoff_until[chat_id] = now + delay
        self.store.outbox.defer([r.id for r in rows], now + delay, str(exc))
        log.warning("delivery to chat %s failed (%s); retrying in %.1fs", chat_id, exc, delay)

    def _after_rejection(
        self,
        chat_id: int,
        rows: list[PendingNotification],
        message: OutgoingMessage,
        buttons: list[list[Button]] | None,
        exc: TelegramError,
    ) -> bool:
        """Telegram refused the request itself (400): plain text once, then dead letters."""
        self.metrics.delivery_failures.labels("400").inc()
        log.warning("Telegram refused a message for chat %s: %s", chat_id, exc.description)
        try:
            message_id = self._send(
                chat_id, to_plain_text(message.html), False, rows[0].thread_id, buttons
            )
        except TelegramError as plain_exc:
            if plain_exc.kind != "permanent":
                self._after_failure(chat_id, rows, plain_exc)
                return False
            self.metrics.delivery_failures.labels("400").inc()
            if len(rows) > 1:
                # Packed with others: retry one notification at a time to find the bad one.
                self._solo.add(chat_id)
                return True
            self._dead_letter(chat_id, rows[0], message, plain_exc)
            return True
        self._after_success(chat_id, rows, message, message_id)
        return True

    def _dead_letter(
        self,
        chat_id: int,
        row: PendingNotification,
        message: OutgoingMessage,
        exc: TelegramError,
    ) -> None:
        now = self.clock()
        moved = self.store.outbox.dead_letter([row.id], message.html, exc.description, now)
        self._solo.discard(chat_id)
        if not moved:
            return
        self.metrics.dead_letters.inc(moved)
        log.error("notification %s for chat %s dead-lettered: %s", row.id, chat_id, exc.description)
        if row.payload.get("report"):
            return  # a report about a dead letter that itself failed: do not loop
        names = sorted({a["labels"].get("alertname", "?") for a in row.payload.get("alerts", [])})
        text = (
            "⚠️ <b>A notification could not be delivered</b>\n"
            f"Telegram refused it twice (as HTML and as plain text): "
            f"{html.escape(exc.description[:300])}\n"
        )
        if names:
            text += "Alerts: " + html.escape(", ".join(names)[:500]) + "\n"
        text += f"It is kept in the bot's dead-letter table (notification {row.id})."
        self.store.outbox.add(
            [NewNotification(chat_id, row.thread_id, "notice", {"html": text, "report": True})], now
        )

    # --- charts -----------------------------------------------------------------------------

    def _queue_charts(
        self, chat_id: int, thread_id: int | None, message: OutgoingMessage, message_id: int
    ) -> None:
        charts = self.config.charts
        if not charts.enabled or self.prometheus is None or charts.max_per_message <= 0:
            return
        if message.compact:
            return  # a storm: a chart per alert would flood the chat; /graph has them
        alerts = [
            a
            for a in message.alerts
            if a["status"] == "firing" and a["labels"].get("severity") == "critical"
        ][: charts.max_per_message]
        if not alerts:
            return
        try:
            self._charts.put_nowait(ChartJob(chat_id, thread_id, alerts, message_id))
        except queue.Full:
            log.warning("%d charts already waiting: none for chat %s", CHARTS_WAITING, chat_id)

    def _draw_charts(self) -> None:
        while not self._stop.is_set():
            job = self._charts.get()
            if job is None:
                return
            for alert in job.alerts:
                try:
                    self._send_chart(job, alert)
                except Exception:  # noqa: BLE001 - a chart never stops the next ones
                    log.exception("chart for chat %s failed", job.chat_id)

    def _send_chart(self, job: ChartJob, alert: dict) -> None:
        charts = self.config.charts
        if self.prometheus is None:
            return
        try:
            png = alert_chart(
                self.prometheus, alert, charts.range_seconds, self.clock(), charts.timeout
            )
        except Exception as exc:  # noqa: BLE001 - a chart never holds back the text
            log.warning("no chart for %s: %s", alert["labels"].get("alertname"), exc)
            return
        if png is None:
            return
        labels = alert["labels"]
        caption = f"📈 <b>{html.escape(labels.get('alertname', ''))}</b>"
        for key in ("rig", "gpu"):
            if labels.get(key):
                caption += f" · {key} {html.escape(labels[key])}"
        caption += f" — last {int(charts.range_seconds // 60)} min"
        if utf16_len(caption) > CAPTION_LIMIT:
            caption = "📈 chart"
        slot = self.limiter.reserve(job.chat_id, self._stop, limit=30)
        if slot is None:
            return
        try:
            self.telegram.send_photo(job.chat_id, png, caption, True, job.thread_id, job.message_id)
        except TelegramError as exc:
            log.warning("chart for chat %s not sent: %s", job.chat_id, exc)
            if exc.kind == "rate_limited":
                self.metrics.rate_limited.inc()
                self.limiter.block(job.chat_id, exc.retry_after or 1.0)
        finally:
            slot.finish()
