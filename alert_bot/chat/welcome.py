"""/start (this chat's id and whether it may use the bot) and /help (the command table)."""

from __future__ import annotations

import html

from alert_bot.chat.context import Chat
from alert_bot.i18n import _
from alert_bot.telegram.types import Message


def start(chat: Chat, message: Message, args: list[str]) -> None:
    chat_id, user_id = message.chat_id, message.sender.id
    allowed = chat.access.may_use(chat_id, user_id)
    text = greeting(chat_id, user_id) + "\n"
    if allowed:
        text += _("✅ This chat is allowed to use the bot. /help lists the commands.")
    else:
        text += _(
            "⛔ This chat is not allowed to use the bot. To make it the default chat, put "
            "<code>TELEGRAM_CHAT_ID={chat_id}</code> in the bot's .env."
        ).format(chat_id=chat_id)
    chat.reply(message, text)


def greeting(chat_id: int, user_id: int | None) -> str:
    """The first line of /start: the ids of the chat and of the user."""
    if user_id is None:
        return _("👋 This is rigwatch. This chat's id is <code>{chat_id}</code>.").format(
            chat_id=chat_id
        )
    return _(
        "👋 This is rigwatch. This chat's id is <code>{chat_id}</code>, yours is "
        "<code>{user_id}</code>."
    ).format(chat_id=chat_id, user_id=user_id)


def help_text(commands: list[tuple[str, str]]) -> str:
    lines = [_("<b>rigwatch bot</b>")]
    lines += [f"/{name} — {html.escape(text)}" for name, text in commands]
    lines.append(_("Writing just <code>gpu</code> or <code>cpu</code> works too."))
    return "\n".join(lines)
