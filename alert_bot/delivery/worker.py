"""The delivery worker: sends what the outbox holds to Telegram, oldest first per chat, within
flood limits, and marks each notification sent only after Telegram accepted it (at-least-once:
a crash between send and mark resends, never loses). A message Telegram refuses is sent again
as plain text, then isolated, then dead-lettered with a notice to the chat. Resolved notices
reply to the firing message they close; edits marking that message resolved are queued rows
like sends, but one that fails never holds back the chat's next message.

Chats are served side by side: each due chat's next message goes to a small pool of sender
threads, at most one in flight per chat (so each chat's order holds), so a chat whose API
answers slowly or oddly holds one sender, never the others' messages."""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from alert_bot.config import Config
from alert_bot.delivery.charts import ChartWorker
from alert_bot.delivery.planner import (
    Plan,
    describe_targets,
    firing_in,
    plan_next,
    progress_after,
    silence_targets,
)
from alert_bot.delivery.retrier import Retrier
from alert_bot.delivery.sender import Sender
from alert_bot.delivery.threads import record_delivery, reply_target
from alert_bot.i18n import _
from alert_bot.loop import BotLoop
from alert_bot.metrics import BotMetrics
from alert_bot.ratelimit import FloodLimiter
from alert_bot.render import (
    SILENCE_DURATIONS,
    AlertRenderer,
    OutgoingMessage,
    silence_length,
    silence_matchers,
    to_plain_text,
)
from alert_bot.store import NewNotification, PendingNotification, Store, StoreError
from alert_bot.telegram import (
    Button,
    ChatMigrated,
    Failure,
    Malformed,
    Permanent,
    RetryAfter,
    Sent,
    TelegramClient,
)
from rigwatch.backoff import Backoff
from rigwatch.logs import logger

log = logger("bot", "delivery")

EDIT_ATTEMPTS = 8  # an edit still failing after this many tries is not worth more


def _reply_gone(failure: Failure) -> bool:
    return "message to reply not found" in failure.description.lower()


def silence_buttons(short_id: str) -> list[list[Button]]:
    return [[Button("🔕 " + silence_length(d), f"s:{short_id}:{d}") for d in SILENCE_DURATIONS]]


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
        charts: ChartWorker | None = None,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.renderer = renderer
        self.charts = charts
        self.sender = Sender(telegram, limiter, self._stop)
        self.retrier = Retrier(config.delivery, store.outbox, limiter, metrics)
        self._wake = threading.Event()
        self._solo: set[int] = set()  # chats whose refused message is being isolated
        self._in_flight: set[int] = set()  # chats a sender thread is working on
        self._in_flight_lock = threading.Condition()
        self._store_paused_until = 0.0  # monotonic; after a store failure on a sender
        self._senders = ThreadPoolExecutor(
            config.delivery.parallel_chats, thread_name_prefix="delivery-send"
        )

    def _interrupt(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        # A send in flight finishes (or times out) on its own; wait for it so nothing writes
        # to the store after the caller closes it.
        with self._in_flight_lock:
            self._in_flight_lock.wait_for(lambda: not self._in_flight, self.join_timeout)
        self._senders.shutdown(wait=False, cancel_futures=True)

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

    def step(self) -> tuple[bool, float]:
        """Hand each due chat with nothing in flight to a sender; returns (handed anything,
        seconds to wait). A sender wakes the loop when it is done."""
        paused = self._store_paused_until - time.monotonic()
        if paused > 0:
            return False, paused
        now = self.clock()
        wait = 1.0
        next_due = self.store.outbox.next_due_at()
        if next_due is not None and next_due > now:
            wait = min(wait, next_due - now)
        # Chats due now are each handed out, held back (their wait counts) or in flight (their
        # sender wakes this loop when done): none needs this loop to poll.
        worked = False
        for chat_id in self.store.outbox.due_chats(now):
            if self._stop.is_set():
                break
            held = self.retrier.wait_for(chat_id, now)
            if held > 0:
                wait = min(wait, held)
                continue
            with self._in_flight_lock:
                if chat_id in self._in_flight:
                    continue
                if len(self._in_flight) >= self.config.delivery.parallel_chats:
                    break  # every sender busy: the next one to finish wakes this loop
                self._in_flight.add(chat_id)
            self._senders.submit(self._deliver_chat, chat_id)
            worked = True
        return worked, wait

    def _deliver_chat(self, chat_id: int) -> None:
        """One chat's next message, on a sender thread; nothing it raises reaches the others."""
        try:
            self._deliver_next(chat_id)
            if self._store_paused_until:
                log.info("delivery resumed: the store works again")
                self._store_paused_until = 0.0
        except StoreError as exc:
            # Sending what cannot be marked sent would repeat it on every pass: wait a second.
            if self._store_paused_until == 0.0:
                log.error("delivery paused: %s", exc)
            self._store_paused_until = time.monotonic() + 1.0
            return
        except Exception as exc:  # noqa: BLE001 - one chat's trouble must not stop the rest
            log.exception("delivery to chat %s failed", chat_id)
            with contextlib.suppress(StoreError):
                rows = self.store.outbox.pending_for_chat(chat_id, 1)
                self.retrier.failed(chat_id, rows, Malformed(type(exc).__name__), self.clock())
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(chat_id)
                self._in_flight_lock.notify_all()
            self._wake.set()

    def _deliver_next(self, chat_id: int) -> bool:
        self.store.database.check()  # never send from a file that is gone: it cannot be marked
        rows = self.store.outbox.pending_for_chat(chat_id, self.config.delivery.batch_rows)
        now = self.clock()
        # Edits wait behind nothing and hold back nothing: one not yet due (after a failure)
        # is passed over, and the messages queued after it go on.
        edits = [r for r in rows if r.kind == "edit"]
        rows = [r for r in rows if r.kind != "edit"]
        due_edits = [r for r in edits if r.next_attempt_at <= now]
        if due_edits and (not rows or due_edits[0].id < rows[0].id):
            return self._edit(chat_id, due_edits[0])
        plan = plan_next(rows, self.renderer, self.config.delivery, now, chat_id in self._solo)
        if plan is None:
            return False
        buttons = self._buttons(plan.message)
        if any(r.attempts > 0 for r in plan.rows):
            self.metrics.retries.inc()
        reply_to = reply_target(self.store, chat_id, plan.thread_id, plan.message)
        verdict = self.sender.send(
            chat_id, plan.message.html, True, plan.thread_id, buttons, reply_to
        )
        if isinstance(verdict, Permanent) and reply_to is not None and _reply_gone(verdict):
            # The firing message is gone or too old to reply to: the notice goes out plainly.
            reply_to = None
            verdict = self.sender.send(chat_id, plan.message.html, True, plan.thread_id, buttons)
        if isinstance(verdict, Permanent):
            return self._after_refusal(chat_id, plan, buttons, verdict, reply_to)
        return self._after(chat_id, plan, verdict)

    def _edit(self, chat_id: int, row: PendingNotification) -> bool:
        """Mark a firing message resolved. Telegram refusing (the message was deleted, or is
        already like this) ends it quietly; anything transient retries this edit alone."""
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
            settings = self.config.delivery
            delay = Backoff(settings.backoff_initial, settings.backoff_max).delay(row.attempts + 1)
        self.store.outbox.defer([row.id], now + delay, str(verdict))
        return False

    def _after(
        self, chat_id: int, plan: Plan, verdict: Sent | Failure, as_html: bool = True
    ) -> bool:
        """Sent, chat migrated, or a failure to retry; True when the message went out."""
        if isinstance(verdict, Sent):
            self._delivered(chat_id, plan, verdict.message_id, as_html)
            return True
        if isinstance(verdict, ChatMigrated):
            log.warning("chat %s became supergroup %s; following it", chat_id, verdict.new_chat_id)
            self.store.migrations.record(chat_id, verdict.new_chat_id, self.clock())
            return False
        self.retrier.failed(chat_id, plan.rows, verdict, self.clock())
        return False

    def _buttons(self, message: OutgoingMessage) -> list[list[Button]] | None:
        firing = firing_in(message)
        targets = silence_targets(firing, self.config.watchdog.alertname)
        if not targets:
            return None
        short_id = self.store.buttons.save(
            [silence_matchers(labels) for labels in targets],
            describe_targets(targets),
            self.clock(),
        )
        return silence_buttons(short_id)

    def _delivered(self, chat_id: int, plan: Plan, message_id: int, as_html: bool) -> None:
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
            self.renderer.began_at,
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
        self._solo.discard(chat_id)
        if self.charts is not None:
            self.charts.offer(chat_id, plan.thread_id, plan.message, message_id)

    def _after_refusal(
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
            self._dead_letter(chat_id, plan.rows, plan.message, refusal)
            return True
        log.warning("Telegram refused a message for chat %s: %s", chat_id, refusal.description)
        plain = self.sender.send(
            chat_id, to_plain_text(plan.message.html), False, plan.thread_id, buttons, reply_to
        )
        if not isinstance(plain, Permanent):
            self._after(chat_id, plan, plain, as_html=False)
            return isinstance(plain, Sent)
        self.metrics.delivery_failures.labels("400").inc()
        if len(plan.rows) > 1:
            # Packed with others: retry one notification at a time to find the bad one.
            self._solo.add(chat_id)
            return True
        self._dead_letter(chat_id, plan.rows[:1], plan.message, plain)
        return True

    def _dead_letter(
        self,
        chat_id: int,
        rows: list[PendingNotification],
        message: OutgoingMessage,
        refusal: Permanent,
    ) -> None:
        now = self.clock()
        ids = [row.id for row in rows]
        moved = self.store.outbox.dead_letter(ids, message.html, refusal.description, now)
        self._solo.discard(chat_id)
        if not moved:
            return
        self.metrics.dead_letters.inc(moved)
        log.error(
            "notification %s for chat %s dead-lettered: %s",
            ", ".join(map(str, ids)),
            chat_id,
            refusal.description,
        )
        if any(row.payload.get("report") for row in rows):
            return  # a report about a dead letter that itself failed: do not loop
        report_chat, report_thread = chat_id, rows[0].thread_id
        if refusal.status == 403 or _unreachable(refusal.description):
            # The report must reach someone: never (only) the chat that cannot be reached.
            self.metrics.chat_unreachable.labels(str(chat_id)).inc()
            others = [
                c
                for c in (self.config.default_chat_id, *(r.chat_id for r in self.config.routes))
                if c != chat_id
            ]
            if not others:
                log.error("chat %s is unreachable and no other chat is configured", chat_id)
                return
            report_chat, report_thread = others[0], None
        names = sorted(
            {
                a["labels"].get("alertname", "?")
                for row in rows
                for a in row.payload.get("alerts", [])
            }
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
        text += _("It is kept in the bot's dead-letter table (notification {id}).").format(
            id=", ".join(map(str, ids))
        )
        if report_chat != chat_id:
            text += "\n" + _(
                "Telegram cannot reach chat {chat}: check its id and the bot's membership."
            ).format(chat=chat_id)
        self.store.outbox.add(
            [NewNotification(report_chat, report_thread, "notice", {"html": text, "report": True})],
            now,
        )


def _unreachable(description: str) -> bool:
    """Whether Telegram refused because of the chat itself, not the message."""
    text = description.lower()
    return "chat not found" in text or "kicked" in text or "blocked" in text
