"""The delivery worker: sends what the outbox holds to Telegram, oldest first per chat, within
flood limits, and marks each notification sent only after Telegram accepted it (at-least-once:
a crash between send and mark resends, never loses). A message Telegram refuses is sent again
as plain text, then isolated, then dead-lettered with a notice to the chat. Resolved notices
reply to the firing message they close; edits marking that message resolved are queued rows
like sends, but one that fails never holds back the chat's next message.

Chats are served side by side (pool.py); edits (edits.py) and dead letters (dead_letters.py)
have their own parts; this loop hands each due chat's next message out and records what
Telegram answered."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from alert_bot.alerts.render import AlertRenderer
from alert_bot.config import Config
from alert_bot.delivery.buttons import buttons_for
from alert_bot.delivery.charts import ChartWorker
from alert_bot.delivery.dead_letters import DeadLetters
from alert_bot.delivery.edits import Editor
from alert_bot.delivery.ledger import Ledger
from alert_bot.delivery.planner import (
    plan_next,
)
from alert_bot.delivery.pool import ChatPool
from alert_bot.delivery.retrier import Retrier
from alert_bot.delivery.sender import Sender
from alert_bot.delivery.threads import reply_target
from alert_bot.delivery.verdicts import Verdicts
from alert_bot.service.loop import BotLoop
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store, StoreError
from alert_bot.telegram.client import Malformed, TelegramClient
from alert_bot.telegram.flood import FloodLimiter
from rigwatch.logs import logger

log = logger("bot", "delivery")


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
        self.editor = Editor(config.delivery, store, self.sender, self.retrier, metrics, clock)
        self.verdicts = Verdicts(
            self.sender,
            Ledger(store, metrics, self.retrier, charts, clock, renderer.began_at),
            self.retrier,
            DeadLetters(config, store, metrics, clock),
            store,
            metrics,
            clock,
        )
        self._wake = threading.Event()
        self._pool = ChatPool(config.delivery.parallel_chats)
        self._store_paused_until = 0.0  # monotonic; after a store failure on a sender

    def _interrupt(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        super().stop()
        # A send in flight finishes (or times out) on its own; wait for it so nothing writes
        # to the store after the caller closes it.
        self._pool.close(self.join_timeout)

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
        worked, held = self._pool.hand_out(
            self.store.outbox.due_chats(now),
            lambda chat_id: self.retrier.wait_for(chat_id, now),
            self._deliver_chat,
            self._stop.is_set,
        )
        return worked, min(wait, held)

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
            self._pool.done(chat_id)
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
            return self.editor.edit(chat_id, due_edits[0])
        solo = chat_id in self.verdicts.solo
        plan = plan_next(rows, self.renderer, self.config.delivery, now, solo)
        if plan is None:
            return False
        buttons = buttons_for(
            self.store, plan.message, self.config.watchdog.alertname, self.clock()
        )
        if any(r.attempts > 0 for r in plan.rows):
            self.metrics.retries.inc()
        reply_to = reply_target(self.store, chat_id, plan.thread_id, plan.message)
        return self.verdicts.send(chat_id, plan, buttons, reply_to)
