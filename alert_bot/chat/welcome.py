"""/start (this chat's id and whether it may use the bot) and /help (the command table)."""

from __future__ import annotations

import html

from alert_bot.chat.context import Chat


def start(chat: Chat, message: dict, args: list[str]) -> None:
    chat_id = message["chat"]["id"]
    user_id = (message.get("from") or {}).get("id")
    allowed = chat.access.may_use(chat_id, user_id)
    text = f"👋 This is rigwatch. This chat's id is <code>{chat_id}</code>"
    if user_id is not None:
        text += f", yours is <code>{user_id}</code>"
    text += ".\n"
    if allowed:
        text += "✅ This chat is allowed to use the bot. /help lists the commands."
    else:
        text += (
            "⛔ This chat is not allowed to use the bot. To make it the default chat, put "
            f"<code>TELEGRAM_CHAT_ID={chat_id}</code> in the bot's .env."
        )
    chat.reply(message, text)


def help_text(commands: list[tuple[str, str]]) -> str:
    lines = ["<b>rigwatch bot</b>"]
    lines += [f"/{name} — {html.escape(text)}" for name, text in commands]
    lines.append("Writing just <code>gpu</code> or <code>cpu</code> works too.")
    return "\n".join(lines)
