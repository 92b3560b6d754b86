"""One attempt at one message: wait for the flood limiter's slot, send, and return what came of
it as a verdict (the sender never sleeps past its slot and never retries)."""

from __future__ import annotations

import threading

from alert_bot.telegram.client import Sent, TelegramClient, TelegramError, Transient, Verdict
from alert_bot.telegram.flood import FloodLimiter
from alert_bot.telegram.types import Button


class Sender:
    def __init__(self, telegram: TelegramClient, limiter: FloodLimiter, stop: threading.Event):
        self.telegram = telegram
        self.limiter = limiter
        self.stop = stop

    def send(
        self,
        chat_id: int,
        text: str,
        as_html: bool,
        thread_id: int | None,
        buttons: list[list[Button]] | None,
        reply_to: int | None = None,
    ) -> Verdict:
        slot = self.limiter.reserve(chat_id, self.stop)
        if slot is None:
            return Transient("stopping")
        try:
            return Sent(
                self.telegram.send_message(chat_id, text, as_html, thread_id, buttons, reply_to)
            )
        except TelegramError as exc:
            return exc.failure
        finally:
            slot.finish()

    def edit(self, chat_id: int, message_id: int, text: str, as_html: bool) -> Verdict:
        """A new text for a message already sent (its buttons removed), under the same flood
        limits as a send."""
        slot = self.limiter.reserve(chat_id, self.stop)
        if slot is None:
            return Transient("stopping")
        try:
            self.telegram.edit_text(chat_id, message_id, text, html=as_html)
            return Sent(message_id)
        except TelegramError as exc:
            return exc.failure
        finally:
            slot.finish()
