"""/mute: quiet every alert of one rig in Alertmanager for a while (one silence on its rig
label that never hides the Watchdog nor the bot's own delivery alerts), list the rig mutes,
and end one early with its button (m:SILENCE_ID)."""

from __future__ import annotations

import html
import re
from datetime import datetime

from alert_bot.chat.context import Chat, log
from alert_bot.chat.silencing import (
    SILENCE_ID,
    mute_comment,
    mute_matchers,
    never_muted,
    rig_mutes,
    until_text,
)
from alert_bot.i18n import N_, DurationError, _, format_window, parse_typed_duration
from alert_bot.telegram.client import TelegramError
from alert_bot.telegram.types import Button, ButtonPress, Message

LONGEST = 7 * 86400.0
RIG_NAME = re.compile(r"[^\s]{1,100}")
USAGE = N_(
    "Usage: /mute &lt;rig&gt; &lt;duration&gt; [reason], e.g. /mute rig1 2h swapping a riser"
)


def describe(chat: Chat, rig: str, silence: dict) -> str:
    until = until_text(chat, silence["endsAt"])
    text = _("🔇 <b>{rig}</b> muted until {time}").format(
        rig=html.escape(rig), time=html.escape(until)
    )
    if silence.get("createdBy"):
        text += _(" by {who}").format(
            who=html.escape(silence["createdBy"].removeprefix("telegram:"))
        )
    reason = silence.get("comment", "").partition(": ")[2]
    if reason:
        text += f": {html.escape(reason[:200])}"
    return text


def _who(message: Message) -> str:
    return message.sender.name or _("someone")


def mute(chat: Chat, message: Message, args: list[str]) -> None:
    watchdog = chat.config.watchdog.alertname
    if not args:
        mutes = rig_mutes(chat.alertmanager.silences(), watchdog)
        if not mutes:
            chat.reply(message, _("No rig is muted.") + " " + _(USAGE))
            return
        lines = [describe(chat, rig, silence) for rig, silence in sorted(mutes.items())]
        buttons = [
            [Button(_("🔔 end {rig} now").format(rig=rig[:40]), f"m:{silence['id']}")]
            for rig, silence in sorted(mutes.items())
        ]
        chat.reply(message, "\n".join(lines), buttons[:10])
        return
    if len(args) < 2 or not RIG_NAME.fullmatch(args[0]):
        chat.reply(message, _(USAGE))
        return
    rig, reason = args[0], " ".join(args[2:])[:300]
    try:
        seconds = parse_typed_duration(args[1])
    except DurationError as exc:
        chat.reply(message, html.escape(str(exc)) + "\n" + _(USAGE))
        return
    if not 60 <= seconds <= LONGEST:
        chat.reply(
            message,
            _("A mute lasts from {shortest} to {longest}.").format(
                shortest=format_window(60), longest=format_window(LONGEST)
            ),
        )
        return
    who = _who(message)
    comment = mute_comment(rig, reason)
    silence_id = chat.alertmanager.create_silence(
        mute_matchers(rig, watchdog), seconds, chat.clock(), f"telegram:{who}", comment
    )
    silence = {
        "endsAt": datetime.fromtimestamp(chat.clock() + seconds).astimezone().isoformat(),
        "createdBy": who,
        "comment": comment,
    }
    still = html.escape(", ".join(never_muted(watchdog)))
    text = describe(chat, rig, silence) + ".\n" + _("Still sent: {alerts}.").format(alerts=still)
    chat.reply(message, text, [[Button(_("🔔 End now"), f"m:{silence_id}")]])


def end_button(chat: Chat, query: ButtonPress, data: str, who: str, message: Message) -> None:
    silence_id = data[2:]
    if not SILENCE_ID.fullmatch(silence_id):
        chat.answer(query, _("This button is not one of mine."))
        return
    chat.alertmanager.expire_silence(silence_id)
    chat.metrics.commands.labels("unmute").inc()
    chat.answer(query, _("Mute ended."))
    if message.message_id:
        try:
            chat.telegram.edit_buttons(message.chat_id, message.message_id, None)
        except TelegramError as exc:
            log.info("could not remove the end-now button: %s", exc)
    chat.reply(
        message,
        _("🔔 Mute ended by {who}: the rig's alerts come through again.").format(
            who=html.escape(who)
        ),
    )
