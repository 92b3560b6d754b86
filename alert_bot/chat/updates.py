"""The Telegram update loop: long-polls getUpdates, keeps the update offset in the store, and
hands each update to the command table. UpdatePoller, the polling itself, also serves the
first-run mode (first_run.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from alert_bot.chat import commands
from alert_bot.chat.context import Access, Chat
from alert_bot.config import Config
from alert_bot.service.loop import BotLoop
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store, StoreError
from alert_bot.telegram.client import TelegramClient, TelegramError
from alert_bot.telegram.flood import FloodLimiter
from alert_bot.telegram.types import Update
from alert_bot.upstream.alertmanager import AlertmanagerClient
from alert_bot.upstream.prometheus import PrometheusClient
from rigwatch.backoff import Backoff
from rigwatch.logs import logger

log = logger("bot", "updates")

OFFSET_STATE = "telegram_update_offset"
# Commands that ask Prometheus or Alertmanager run on these threads, so a slow upstream (up to
# its total deadline) holds up neither the update loop nor /start and /help.
COMMAND_WORKERS = 4


@dataclass
class UpdatePoller:
    """getUpdates long polling: each update is handed to handle() in order, after the offset
    moved past it (and keep_offset, when given, saved it); a failed poll is retried after a
    backoff of 1 s, doubling, at most 30 s."""

    telegram: TelegramClient
    timeout: int
    stop: threading.Event
    offset: int | None = None
    keep_offset: Callable[[int], None] | None = None
    before_poll: Callable[[], None] | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0))

    def run(self, handle: Callable[[Update], None]) -> None:
        """Poll until stop is set."""
        while not self.stop.is_set():
            try:
                if self.before_poll is not None:
                    self.before_poll()
                updates = self.telegram.get_updates(self.offset, self.timeout)
                self.backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                delay = self.backoff.next()
                if isinstance(exc, TelegramError):
                    log.warning("Telegram updates failed (%s); retrying in %.1fs", exc, delay)
                else:
                    log.exception("Telegram updates failed; retrying in %.1fs", delay)
                self.stop.wait(delay)
                continue
            for update in updates:
                self.offset = update.update_id + 1
                if self.keep_offset is not None:
                    self.keep_offset(self.offset)
                handle(update)


class UpdateLoop(BotLoop):
    thread_name = "telegram-updates"
    # A long poll in flight cannot be interrupted; the thread is a daemon, and updates not yet
    # confirmed come again at the next start.
    join_timeout = 3.0

    def __init__(
        self,
        config: Config,
        store: Store,
        telegram: TelegramClient,
        prometheus: PrometheusClient,
        alertmanager: AlertmanagerClient,
        metrics: BotMetrics,
        limiter: FloodLimiter,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.telegram = telegram
        self.chat = Chat(
            config,
            store,
            telegram,
            prometheus,
            alertmanager,
            metrics,
            limiter,
            Access(config, store),
            clock,
            self._stop,
        )
        offset: int | None = None
        with contextlib.suppress(StoreError, ValueError):
            saved = store.state.get(OFFSET_STATE)
            offset = int(saved) if saved else None
        self.poller = UpdatePoller(
            telegram,
            config.long_poll_timeout,
            self._stop,
            offset,
            self._keep_offset,
            self._register_commands,
        )
        self.commands_registered = False
        self._workers = ThreadPoolExecutor(COMMAND_WORKERS, thread_name_prefix="command")

    def stop(self) -> None:
        super().stop()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _handle(self, update: Update) -> None:
        try:
            commands.handle_update(self.chat, update)
        except Exception:  # noqa: BLE001 - one bad update must not stop the loop
            log.exception("handling update %s failed", update.update_id)

    def _register_commands(self) -> None:
        if not self.commands_registered:
            for code, menu in commands.menus():
                self.telegram.set_commands(menu, code)
            self.commands_registered = True

    def _keep_offset(self, offset: int) -> None:
        # Telegram forgets an update only when the next poll names a later offset; a bot
        # stopped before that poll would replay it (a button press silencing twice) unless
        # the offset survives the restart.
        try:
            self.store.state.set(OFFSET_STATE, str(offset))
        except StoreError as exc:
            log.warning("could not keep the update offset: %s", exc)

    def _dispatch(self, update: Update) -> None:
        if commands.answered_at_once(update):
            self._handle(update)
        else:
            self._workers.submit(self._handle, update)

    def _run(self) -> None:
        self.poller.run(self._dispatch)
