"""What every chat handler works with: the upstream clients, the store, access control (the one
place that decides who may use the bot) and replies within the flood limits."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.config import Config
from alert_bot.i18n import format_time
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store
from alert_bot.telegram.client import TelegramClient, TelegramError
from alert_bot.telegram.flood import FloodLimiter
from alert_bot.telegram.html import split_html
from alert_bot.telegram.types import Button, ButtonPress, Message
from alert_bot.upstream.alertmanager import AlertmanagerClient
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import PrometheusClient
from rigwatch.logs import logger

log = logger("bot", "chat")

REPLY_PIECE_CHARS = 4000
REPLY_WAIT_LIMIT = 60.0  # seconds a reply waits for the flood limiter before it is dropped


class Access:
    """Who may use the bot: the configured chats and users, also for an allowed group that
    became a supergroup since (the configuration still names its old id)."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store

    def may_use(self, chat_id: int, user_id: int | None) -> bool:
        if self.config.may_use(chat_id, user_id):
            return True
        former = self.store.migrations.former_ids(chat_id)
        return any(self.config.may_use(old, user_id) for old in former)


@dataclass
class Chat:
    """The collaborators a handler needs; handlers are plain functions taking this first."""

    config: Config
    store: Store
    telegram: TelegramClient
    prometheus: PrometheusClient
    alertmanager: AlertmanagerClient
    metrics: BotMetrics
    limiter: FloodLimiter
    access: Access
    clock: Callable[[], float]
    stop: threading.Event

    def cannot_tell(self, exc: UpstreamError) -> str:
        """The chat's line for an upstream that could not answer usefully, in the bot's
        language, with since when it has been unreachable; logged once as it is shown."""
        log.warning("command answered without data: %s", exc)
        return "⚠️ " + html.escape(exc.text(lambda t: format_time(t, self.config.zone)))

    def reply(
        self,
        message: Message,
        text: str,
        buttons: list[list[Button]] | None = None,
    ) -> int | None:
        """Answer in the message's chat (and forum topic), split into pieces Telegram takes;
        the buttons go with the last piece."""
        chat_id, thread_id = message.chat_id, message.thread_id
        last_id = None
        pieces = split_html(text, REPLY_PIECE_CHARS) or ["…"]
        for number, piece in enumerate(pieces):
            slot = self.limiter.reserve(chat_id, self.stop, limit=REPLY_WAIT_LIMIT)
            if slot is None:
                return last_id
            try:
                last_id = self.telegram.send_message(
                    chat_id,
                    piece,
                    True,
                    thread_id,
                    buttons if number == len(pieces) - 1 else None,
                )
            except TelegramError as exc:
                log.warning("reply to chat %s failed: %s", chat_id, exc)
                return last_id
            finally:
                slot.finish()
        return last_id

    def reply_photo(self, message: Message, png: bytes, caption: str) -> None:
        chat_id, thread_id = message.chat_id, message.thread_id
        slot = self.limiter.reserve(chat_id, self.stop, limit=REPLY_WAIT_LIMIT)
        if slot is None:
            return
        try:
            self.telegram.send_photo(chat_id, png, caption, True, thread_id)
        except TelegramError as exc:
            log.warning("chart to chat %s failed: %s", chat_id, exc)
        finally:
            slot.finish()

    def answer(self, query: ButtonPress, text: str, alert: bool = False) -> None:
        """Answer a button press (the small note, or a dialog when alert is true)."""
        try:
            self.telegram.answer_callback(query.id, text, alert)
        except TelegramError as exc:
            log.warning("answering a button press failed: %s", exc)
