"""The Bot API's objects as the bot holds them: a button it puts under a message, and what
Telegram sends (getUpdates), read at the client's boundary into small frozen types with the
fields the bot uses named: a message (its chat, topic, sender, text, keyboard) and a button
press. The raw JSON is read here rather than by the library's own Update classes:
one update they cannot parse fails the whole batch before its update_id is known, so it would
come back on every poll. Here a field of the wrong type reads as absent; only an update without
an id is dropped (it cannot be confirmed, and Telegram never sends one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Button:
    """A button under a message: its text and what it sends back when pressed."""

    text: str
    callback_data: str


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Sender:
    id: int | None
    username: str = ""
    first_name: str = ""

    @property
    def name(self) -> str:
        """How the chat names who did something (a silence's "by ..."): @username's name, else
        the first name, else the id."""
        return self.username or self.first_name or (str(self.id) if self.id is not None else "")

    @classmethod
    def read(cls, raw: object) -> Sender:
        user = _object(raw)
        return cls(_int(user.get("id")), _text(user.get("username")), _text(user.get("first_name")))


@dataclass(frozen=True)
class Message:
    chat_id: int
    message_id: int | None = None
    sender: Sender = Sender(None)
    text: str = ""
    thread_id: int | None = None  # the forum topic, when the message is in one
    migrate_to_chat_id: int | None = None  # a group became a supergroup with this id
    keyboard: tuple[tuple[Button, ...], ...] = ()  # the buttons under it (a bot's message)

    @classmethod
    def read(cls, raw: object) -> Message | None:
        """None for a message without a chat id (nothing could be answered)."""
        message = _object(raw)
        chat_id = _int(_object(message.get("chat")).get("id"))
        if chat_id is None:
            return None
        rows = _object(message.get("reply_markup")).get("inline_keyboard")
        keyboard = tuple(
            tuple(
                Button(_text(b.get("text")), b["callback_data"])
                for b in row
                if isinstance(b, dict) and isinstance(b.get("callback_data"), str)
            )
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, list)
        )
        return cls(
            chat_id=chat_id,
            message_id=_int(message.get("message_id")),
            sender=Sender.read(message.get("from")),
            text=_text(message.get("text")),
            thread_id=_int(message.get("message_thread_id"))
            if message.get("is_topic_message") is True
            else None,
            migrate_to_chat_id=_int(message.get("migrate_to_chat_id")),
            keyboard=keyboard,
        )


@dataclass(frozen=True)
class ButtonPress:
    id: str
    data: str
    sender: Sender
    message: Message | None  # the bot's message the button is under (None when too old)

    @property
    def chat_id(self) -> int | None:
        """The chat the press came from: the message's, else the sender's private chat."""
        return self.message.chat_id if self.message is not None else self.sender.id

    @classmethod
    def read(cls, raw: object) -> ButtonPress:
        query = _object(raw)
        return cls(
            _text(query.get("id")),
            _text(query.get("data")),
            Sender.read(query.get("from")),
            Message.read(query.get("message")) if "message" in query else None,
        )


@dataclass(frozen=True)
class Update:
    update_id: int
    message: Message | None = None
    button: ButtonPress | None = None

    @classmethod
    def read(cls, raw: object) -> Update | None:
        """None for an update without an id."""
        update = _object(raw)
        update_id = _int(update.get("update_id"))
        if update_id is None:
            return None
        button = update.get("callback_query")
        return cls(
            update_id,
            Message.read(update["message"]) if "message" in update else None,
            ButtonPress.read(button) if isinstance(button, dict) else None,
        )
