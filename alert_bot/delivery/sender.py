"""One attempt at one message: wait for the flood limiter's slot, send, and return what came of
it as a verdict (the sender never sleeps past its slot and never retries)."""

from __future__ import annotations

import threading

from alert_bot.ratelimit import FloodLimiter
from alert_bot.telegram import Button, Sent, TelegramClient, TelegramError, Transient, Verdict


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
    ) -> Verdict:
        slot = self.limiter.reserve(chat_id, self.stop)
        if slot is None:
            return Transient("stopping")
        try:
            return Sent(self.telegram.send_message(chat_id, text, as_html, thread_id, buttons))
        except TelegramError as exc:
            return exc.failure
        finally:
            slot.finish()
