"""The bot's Telegram client: pyTelegramBotAPI calls with errors sorted into what the delivery
worker must do about them, and the bot token scrubbed out of every error text and log line
(the token is part of every Bot API URL, and HTTP libraries print URLs in their errors).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import requests
import telebot
from telebot import apihelper, types

from alert_bot.telegram.types import Button, Update

DEFAULT_REQUEST_TIMEOUT = 15.0


def configure_api(
    api_url: str | None = None, request_timeout: float = DEFAULT_REQUEST_TIMEOUT
) -> None:
    """Point pyTelegramBotAPI at a Bot API server and set its request timeouts.

    The library keeps both in module-wide settings (``apihelper.API_URL``, ``CONNECT_TIMEOUT``,
    ``READ_TIMEOUT``) that every TeleBot in the process shares, so this is done once, by the
    program (or a test) before it builds a TelegramClient, never by a constructor. None keeps
    Telegram's own server.
    """
    if api_url is None:
        apihelper.API_URL = None
        apihelper.FILE_URL = None
    else:
        url = api_url if "{0}" in api_url else api_url.rstrip("/") + "/bot{0}/{1}"
        apihelper.API_URL = url
        apihelper.FILE_URL = url.replace("/bot{0}/{1}", "/file/bot{0}/{1}")
    apihelper.CONNECT_TIMEOUT = request_timeout
    apihelper.READ_TIMEOUT = request_timeout


@dataclass(frozen=True)
class Sent:
    """Telegram accepted the message."""

    message_id: int


@dataclass(frozen=True)
class Failure:
    """A failed Bot API call, classified by what the caller must do about it."""

    description: str
    status: int | None = None
    kind = "failed"

    def __str__(self) -> str:
        return f"Telegram {self.kind}: {self.description}"


@dataclass(frozen=True)
class RetryAfter(Failure):
    """429: this chat must wait ``seconds`` before the next message."""

    seconds: float = 1.0
    kind = "rate_limited"


@dataclass(frozen=True)
class Transient(Failure):
    """Network error, 5xx, 401/404: nothing wrong with the message; retry with backoff."""

    kind = "transient"


@dataclass(frozen=True)
class Malformed(Transient):
    """An answer the client cannot understand (``{"ok": false}`` without an error code,
    ``{"ok": true}`` without a result, not JSON...): a proxy or a self-hosted Bot API server
    can send these. Treated like a network error: this chat backs off, the others go on."""

    kind = "malformed"


@dataclass(frozen=True)
class Permanent(Failure):
    """400 (and 413/414), 403 (the chat refuses the bot): sending the same request again
    cannot help."""

    kind = "permanent"


@dataclass(frozen=True)
class ChatMigrated(Failure):
    """The group became a supergroup; its messages now go to ``new_chat_id``."""

    new_chat_id: int = 0
    kind = "migrated"


Verdict = Sent | RetryAfter | Transient | Permanent | ChatMigrated

# What pyTelegramBotAPI raises when an answer lacks what it expects (it reads
# result_json["error_code"] and json["result"] unchecked, then builds objects from them;
# ValueError too, e.g. a result that is not an object).
_MALFORMED_ERRORS = (KeyError, TypeError, AttributeError, IndexError)


class TelegramError(Exception):
    """A failed Bot API call; ``failure`` says which kind (every client method raises only this)."""

    def __init__(self, failure: Failure):
        super().__init__(str(failure))
        self.failure = failure

    @property
    def description(self) -> str:
        return self.failure.description


class TokenScrubber(logging.Filter):
    """Replaces the bot token in log records, whichever library logs them."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if scrub(message, self.token) != message:
            record.msg = scrub(message, self.token)
            record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if scrub(text, self.token) != text:
                record.exc_info = None
                record.exc_text = scrub(text, self.token)
        return True


def scrub(text: str, token: str) -> str:
    """The token, and its secret half alone (an error description may echo just that), replaced;
    the bot id before the colon is public and kept so logs still say which bot."""
    if not token:
        return text
    bot_id, _, secret = token.partition(":")
    text = text.replace(token, f"{bot_id}:<redacted>")
    if secret:
        text = text.replace(secret, "<redacted>")
    return text


def install_scrubber(token: str) -> TokenScrubber:
    """Scrub the token from every handler that exists now (call after logging is set up)."""
    scrubber = TokenScrubber(token)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(scrubber)
    for name in ("TeleBot", "urllib3", "requests"):
        logging.getLogger(name).addFilter(scrubber)
    return scrubber


def keyboard(rows: list[list[Button]] | None) -> types.InlineKeyboardMarkup | None:
    if not rows:
        return None
    markup = types.InlineKeyboardMarkup()
    for row in rows:
        markup.row(
            *[types.InlineKeyboardButton(b.text, callback_data=b.callback_data) for b in row]
        )
    return markup


def _reply(message_id: int | None) -> types.ReplyParameters | None:
    if message_id is None:
        return None
    return types.ReplyParameters(message_id, allow_sending_without_reply=True)


def _message_id(message: object) -> int:
    message_id = getattr(message, "message_id", None)
    if not isinstance(message_id, int):
        raise TelegramError(Malformed("the answer names no message_id"))
    return message_id


class TelegramClient:
    """Thin, typed wrapper over telebot.TeleBot; every method raises only TelegramError."""

    def __init__(self, token: str):
        """The server and timeouts are the process's, set once by configure_api()."""
        self.token = token
        self.bot = telebot.TeleBot(token, threaded=False, parse_mode=None)

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except apihelper.ApiTelegramException as exc:
            raise self._classify(exc.error_code, exc.result_json) from None
        except apihelper.ApiHTTPException as exc:
            status = getattr(exc.result, "status_code", 0)
            body = {}
            with contextlib.suppress(ValueError, AttributeError):
                body = exc.result.json()
            if isinstance(body, dict) and "error_code" in body:
                raise self._classify(status, body) from None
            # 400, and 413/414 (the request is too large, e.g. a huge query string): sending
            # the same request again cannot help; the plain-text fallback is smaller.
            description = f"HTTP {status}"
            if status == 429:
                failure: Failure = RetryAfter(description, status)
            elif status in (400, 413, 414):
                failure = Permanent(description, status)
            else:
                failure = Transient(description, status)
            raise TelegramError(failure) from None
        except apihelper.ApiInvalidJSONException:
            raise TelegramError(Malformed("invalid JSON from the Bot API")) from None
        except (requests.RequestException, OSError) as exc:
            text = scrub(f"{type(exc).__name__}: {exc}", self.token)
            raise TelegramError(Transient(text)) from None
        except (ValueError, *_MALFORMED_ERRORS) as exc:
            text = scrub(f"answer not understood ({type(exc).__name__}: {exc})", self.token)
            raise TelegramError(Malformed(text[:300])) from None

    def _classify(self, status: int, body: dict) -> TelegramError:
        description = scrub(str(body.get("description", "")), self.token)
        parameters = body.get("parameters") or {}
        if status == 429:
            seconds = float(parameters.get("retry_after", 1))
            return TelegramError(RetryAfter(description, 429, seconds))
        if parameters.get("migrate_to_chat_id"):
            new_chat_id = int(parameters["migrate_to_chat_id"])
            return TelegramError(ChatMigrated(description, status, new_chat_id))
        if status in (400, 403):
            # 403: the chat refuses the bot (blocked by the user, kicked from the group, not a
            # member of the channel, no right to post): no retry can pass until someone acts,
            # so like a chat Telegram does not know, not like an outage.
            return TelegramError(Permanent(description, status))
        # 401 (token revoked), 404 (wrong API URL) and 5xx: nothing wrong with the message or
        # the chat; keep it and retry until fixed.
        return TelegramError(Transient(description, status))

    def send_message(
        self,
        chat_id: int,
        text: str,
        html: bool = True,
        thread_id: int | None = None,
        buttons: list[list[Button]] | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Sends a message; returns its message_id."""
        message = self._call(
            self.bot.send_message,
            chat_id,
            text,
            parse_mode="HTML" if html else None,
            reply_markup=keyboard(buttons),
            message_thread_id=thread_id,
            reply_parameters=_reply(reply_to),
            link_preview_options=types.LinkPreviewOptions(is_disabled=True),
        )
        return _message_id(message)

    def send_photo(
        self,
        chat_id: int,
        png: bytes,
        caption: str = "",
        html: bool = True,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        photo = types.InputFile(io.BytesIO(png), file_name="chart.png")
        message = self._call(
            self.bot.send_photo,
            chat_id,
            photo,
            caption=caption or None,
            parse_mode="HTML" if html and caption else None,
            message_thread_id=thread_id,
            reply_parameters=_reply(reply_to),
        )
        return _message_id(message)

    def get_updates(self, offset: int | None, timeout: int) -> list[Update]:
        """The next updates, read into alert_bot.telegram.types (which says why not the
        library's own)."""
        updates = self._call(
            apihelper.get_updates,
            self.token,
            offset=offset,
            timeout=timeout + 10,
            long_polling_timeout=timeout,
            allowed_updates=["message", "callback_query"],
        )
        if not isinstance(updates, list):
            raise TelegramError(Malformed("getUpdates did not answer a list"))
        return [update for update in map(Update.read, updates) if update is not None]

    def get_me(self) -> dict:
        """The bot's own user (id, username): proof that Telegram accepts the token."""
        user = self._call(self.bot.get_me)
        return {"id": user.id, "username": user.username or ""}

    def get_chat(self, chat_id: int) -> None:
        """Whether the bot can reach this chat (getChat); TelegramError when it cannot."""
        self._call(self.bot.get_chat, chat_id)

    def answer_callback(self, callback_id: str, text: str, alert: bool = False) -> None:
        self._call(self.bot.answer_callback_query, callback_id, text=text[:200], show_alert=alert)

    def set_commands(
        self, commands: list[tuple[str, str]], language_code: str | None = None
    ) -> None:
        """The command menu; with a language code, the one for users whose app speaks it."""
        self._call(
            self.bot.set_my_commands,
            [types.BotCommand(name, text) for name, text in commands],
            language_code=language_code,
        )

    def edit_buttons(
        self, chat_id: int, message_id: int, buttons: list[list[Button]] | None
    ) -> None:
        self._call(
            self.bot.edit_message_reply_markup,
            chat_id=chat_id,
            message_id=message_id,
            reply_markup=keyboard(buttons) or types.InlineKeyboardMarkup(),
        )

    def edit_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        buttons: list[list[Button]] | None = None,
        html: bool = True,
    ) -> None:
        self._call(
            self.bot.edit_message_text,
            text,
            chat_id=chat_id,
            message_id=message_id,
            parse_mode="HTML" if html else None,
            reply_markup=keyboard(buttons),
            link_preview_options=types.LinkPreviewOptions(is_disabled=True),
        )
