"""The command table: every command the bot answers, its description, its handler and who may
use it. Dispatch, /help and Telegram's command menu (setMyCommands) all read this one table;
button presses are routed by the callback table below it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.chat import alertmanager, graph, mute, rig_state, welcome
from alert_bot.chat import health as card_health
from alert_bot.chat import runs as runs_chat
from alert_bot.chat.context import Chat
from alert_bot.i18n import LANGUAGES, N_, _, language, translations
from alert_bot.store import StoreError
from alert_bot.telegram.types import ButtonPress, Message, Update
from alert_bot.upstream.fetch import UpstreamError

Handler = Callable[[Chat, dict, list[str]], None]
ButtonHandler = Callable[[Chat, dict, str, str, dict], None]

REFUSAL = N_("Sorry, only the people this bot is set up for can do that.")


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    handler: Handler
    public: bool = False  # anyone may use it, not only the allowed chats and users
    plain_word: bool = False  # also answered when written without the slash ("gpu")


def _help(chat: Chat, message: Message, args: list[str]) -> None:
    chat.reply(message, welcome.help_text(menu()))


COMMANDS = [
    Command(
        "start", N_("this chat's id and whether it may use the bot"), welcome.start, public=True
    ),
    Command("help", N_("what the bot can do"), _help, public=True),
    Command("status", N_("every rig: cards, host and firing alerts"), rig_state.status),
    Command(
        "gpu",
        N_("GPU temperatures, load, memory, power, fans [rig]"),
        rig_state.gpu,
        plain_word=True,
    ),
    Command(
        "cpu", N_("host CPU temperature, load, memory, disk [rig]"), rig_state.cpu, plain_word=True
    ),
    Command("alerts", N_("firing alerts, with silence buttons"), alertmanager.alerts),
    Command("silences", N_("active silences, with unsilence buttons"), alertmanager.silences),
    Command(
        "graph", N_("chart: gpu|cpu|mem|disk [rig] [gpu] or PromQL [1h|6h|24h|7d]"), graph.graph
    ),
    Command(
        "mute", N_("quiet a rig's alerts: <rig> <duration> [reason]; alone: rig mutes"), mute.mute
    ),
    Command("runs", N_("training runs: running now and ended in 24 h [rig]"), runs_chat.runs),
    Command(
        "energy", N_("GPU energy and cost per rig and card [rig] [1d|7d|30d]"), runs_chat.energy
    ),
    Command(
        "health", N_("card wear: what drifted against four weeks ago [rig]"), card_health.health
    ),
]
BY_NAME = {command.name: command for command in COMMANDS}
PERSONAL = {"runs", "energy"}  # what a person's own chat may ask (about its own runs only)
PLAIN_WORDS = {command.name for command in COMMANDS if command.plain_word}

# Button callback data starts with a prefix naming what the button does.
BUTTONS: dict[str, ButtonHandler] = {
    "s:": alertmanager.silence_button,
    "u:": alertmanager.unsilence_button,
    "m:": mute.end_button,
}


def menu(in_language: str | None = None) -> list[tuple[str, str]]:
    """(name, description) of every command, in the table's order, in the bot's language or
    the one given: /help and setMyCommands."""
    catalog = translations(in_language or language())
    return [(command.name, catalog.gettext(command.description)) for command in COMMANDS]


def menus() -> list[tuple[str | None, list[tuple[str, str]]]]:
    """The command menus to register: the bot's language for everyone (no language code), and
    each language for the Telegram users whose app speaks it."""
    return [(None, menu()), *((code, menu(code)) for code in LANGUAGES)]


def _refuse_chat(chat: Chat, message: Message, chat_id: int) -> None:
    chat.metrics.commands.labels("refused").inc()
    chat.reply(
        message,
        _(
            "Sorry, this chat is not allowed to use rigwatch. Its id is <code>{chat_id}</code>: "
            "set <code>TELEGRAM_CHAT_ID</code> to it if alerts should come here, or add it to "
            "<code>access.allowed_chat_ids</code> in the bot's configuration if it should only "
            "use the commands."
        ).format(chat_id=chat_id),
    )


def handle_message(chat: Chat, message: Message) -> None:
    chat_id = message.chat_id
    if message.migrate_to_chat_id:
        chat.store.migrations.record(chat_id, message.migrate_to_chat_id, chat.clock())
        return
    text = message.text.strip()
    if not text:
        return
    words = text.split()
    first = words[0].lower()
    if first.startswith("/"):
        name = first[1:].split("@", 1)[0]
    elif first in PLAIN_WORDS:
        name = first
    else:
        return
    command = BY_NAME.get(name)
    if command is None:
        if "@" not in first:  # "/x@other_bot" in a group is another bot's business
            chat.reply(message, _("Unknown command. /help lists what I can do."))
        return
    user_id = message.sender.id
    # A person's own chat (runs.user_chats) may ask about its own runs and nothing else.
    personal = command.name in PERSONAL and bool(chat.config.runs.users_of(chat_id))
    if not command.public and not personal and not chat.access.may_use(chat_id, user_id):
        _refuse_chat(chat, message, chat_id)
        return
    chat.metrics.commands.labels(command.name).inc()
    try:
        command.handler(chat, message, words[1:])
    except UpstreamError as exc:
        chat.reply(message, chat.cannot_tell(exc))


def handle_button(chat: Chat, query: ButtonPress) -> None:
    data = query.data
    chat_id = query.chat_id
    if chat_id is None or not chat.access.may_use(chat_id, query.sender.id):
        chat.metrics.commands.labels("refused").inc()
        chat.answer(query, _(REFUSAL), alert=True)
        return
    # A press under a message Telegram no longer sends (too old): answered in the sender's chat.
    message = query.message or Message(chat_id)
    who = query.sender.name or _("someone")
    handler = next((h for prefix, h in BUTTONS.items() if data.startswith(prefix)), None)
    try:
        if handler is None:
            chat.answer(query, _("This button is not one of mine."))
        else:
            handler(chat, query, data, who, message)
    except UpstreamError as exc:
        chat.answer(
            query, _("Alertmanager did not do it: {error}").format(error=exc.text()), alert=True
        )
    except StoreError:
        chat.answer(query, _("The bot's store is unavailable; try again later."), alert=True)


def answered_at_once(update: Update) -> bool:
    """Whether an update needs neither Prometheus nor Alertmanager (/start, /help, text that
    is no command): the update loop answers those itself, never behind a slow upstream."""
    message = update.message
    if message is None:
        return update.button is None  # a button: Alertmanager; nothing at all: nothing to do
    words = message.text.split()
    if not words:
        return True
    first = words[0].lower()
    name = first[1:].split("@", 1)[0] if first.startswith("/") else first
    command = BY_NAME.get(name)
    if command is None:
        return True
    return command.public


def handle_update(chat: Chat, update: Update) -> None:
    if update.button is not None:
        handle_button(chat, update.button)
    elif update.message is not None:
        handle_message(chat, update.message)
