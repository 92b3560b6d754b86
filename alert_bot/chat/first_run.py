"""The first-run mode: before a default chat is configured the bot only answers /start with
the chat's id (what a new owner puts in TELEGRAM_CHAT_ID) and says so to anything else."""

from __future__ import annotations

import html
import threading

from alert_bot.chat.updates import UpdatePoller
from alert_bot.chat.welcome import greeting
from alert_bot.i18n import N_, _
from alert_bot.telegram.client import RetryAfter, TelegramClient, TelegramError
from alert_bot.telegram.types import Message, Update
from rigwatch.logs import logger

log = logger("bot", "first_run")

NOT_YET = N_(
    "rigwatch is not set up yet: send /start here to learn this chat's id, put it in "
    "<code>TELEGRAM_CHAT_ID</code> and restart the bot."
)


def answer(message: Message) -> str | None:
    """The reply to one message in the first-run mode (None: a message to leave alone)."""
    text = message.text.strip()
    if not text.startswith("/"):
        return None
    command = text.split()[0][1:].split("@", 1)[0].lower()
    if command != "start":
        return None if "@" in text.split()[0] else _(NOT_YET)
    chat_id, user_id = message.chat_id, message.sender.id
    return (
        greeting(chat_id, user_id)
        + "\n"
        + _(
            "To get the alerts here, put <code>{setting}</code> in the bot's environment (.env) "
            "with the other settings and restart the bot."
        ).format(setting=html.escape(f"TELEGRAM_CHAT_ID={chat_id}"))
    )


def run(telegram: TelegramClient, stop: threading.Event, poll_timeout: int = 25) -> None:
    """Answer /start until stop is set, through the bot's own update polling (updates are
    confirmed as they are answered)."""
    log.warning(
        "first-run mode: TELEGRAM_CHAT_ID is not set, so the bot only answers /start; "
        "send /start to it in the chat that should get the alerts"
    )

    def handle(update: Update) -> None:
        message = update.message
        if message is None:
            return
        reply = answer(message)
        if reply is not None:
            _send(telegram, message.chat_id, reply, stop)

    UpdatePoller(telegram, poll_timeout, stop).run(handle)


def _send(telegram: TelegramClient, chat_id: int, text: str, stop: threading.Event) -> None:
    # A group takes about one message a second: wait as long as Telegram asks, a few times.
    for _attempt in range(5):
        try:
            telegram.send_message(chat_id, text)
            log.info("answered in chat %s", chat_id)
            return
        except TelegramError as exc:
            if not isinstance(exc.failure, RetryAfter) or stop.wait(exc.failure.seconds):
                log.warning("reply to chat %s failed: %s", chat_id, exc)
                return
