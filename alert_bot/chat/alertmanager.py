"""/alerts and /silences from Alertmanager, and the buttons under them: silence the alerts a
message shows for a while (s:SHORT_ID:DURATION), or remove a silence (u:SILENCE_ID)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import replace

from alert_bot.alerts.render import SEVERITY_MARKERS, alert_place
from alert_bot.alerts.silences import (
    SILENCE_DURATIONS,
    matchers_text,
    silence_length,
    silence_matchers,
)
from alert_bot.chat.context import Chat, log
from alert_bot.chat.silencing import BUTTON_COMMENT, MUTE_COMMENT, SILENCE_ID, rig_mutes, until_text
from alert_bot.i18n import _, format_time, ngettext
from alert_bot.telegram.client import TelegramError
from alert_bot.telegram.types import Button, ButtonPress, Message
from alert_bot.upstream.alertmanager import ActiveAlert
from alert_bot.upstream.fetch import UpstreamError

LISTED = 30  # alerts or silences listed in one answer
# An /alerts answer stays within two Telegram messages however long the labels are: each
# label value and summary is clipped, and the listing stops at this many characters.
CLIPPED_CHARS = 200
LISTING_CHARS = 7000
WITH_BUTTONS = 10  # of those, the first ones get buttons


def is_heartbeat(chat: Chat, labels: Mapping[str, str]) -> bool:
    """The always-firing Watchdog: never listed as a problem, never offered for silencing
    (silencing it makes the bot report a silent pipeline)."""
    return labels.get("alertname") == chat.config.watchdog.alertname


def firing_alerts(chat: Chat) -> list[ActiveAlert]:
    """Firing alerts, silenced ones included, without the heartbeat; a silenced alert carries
    ``silenced_until`` (Alertmanager's time), the latest end of the silences on it."""
    alerts = [
        a for a in chat.alertmanager.alerts(silenced=True) if not is_heartbeat(chat, a.labels)
    ]
    if not any(a.silenced_by for a in alerts):
        return alerts
    try:
        ends = {s["id"]: s.get("endsAt", "") for s in chat.alertmanager.silences()}
    except UpstreamError:
        ends = {}

    def until(alert: ActiveAlert) -> ActiveAlert:
        if not alert.silenced_by:
            return alert
        times = [ends.get(i, "") for i in alert.silenced_by]
        return replace(alert, silenced_until=max(times) if any(times) else "?")

    return [until(a) for a in alerts]


def silenced_note(chat: Chat, alert: ActiveAlert) -> str:
    until = alert.silenced_until
    if not until:
        return ""
    return _("🔕 silenced until {time}").format(time=html.escape(until_text(chat, until)))


def alerts(chat: Chat, message: Message, args: list[str]) -> None:
    firing = firing_alerts(chat)
    if not firing:
        chat.reply(message, _("✅ No firing alerts."))
        return
    silenced = sum(1 for a in firing if a.silenced_until)
    count = len(firing)
    title = ngettext("<b>{count} firing alert</b>", "<b>{count} firing alerts</b>", count)
    title = title.format(count=count)
    if silenced:
        title += ngettext(" ({count} silenced)", " ({count} silenced)", silenced).format(
            count=silenced
        )
    lines = [title]
    buttons: list[list[Button]] = []
    now = chat.clock()
    size = len(title)
    listed = 0
    for number, alert in enumerate(firing[:LISTED], start=1):
        labels = alert.labels
        marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
        where = " · ".join(html.escape(_clip(place)) for place in alert_place(labels))
        summary = _clip(alert.annotations.get("summary", ""))
        name = _clip(alert.alertname or "?")
        line = f"{number}. {marker} <b>{html.escape(name)}</b>"
        if where:
            line += f" · {where}"
        if summary:
            line += f" — {html.escape(summary)}"
        if alert.silenced_until:
            line += f" · {silenced_note(chat, alert)}"
        if size + len(line) > LISTING_CHARS:
            break
        size += len(line) + 1
        listed = number
        lines.append(line)
        if number <= WITH_BUTTONS and not alert.silenced_until:
            short_id = chat.store.buttons.save(
                [silence_matchers(labels)], f"{alert.alertname or '?'} {where}", now
            )
            buttons.append(
                [
                    Button(f"#{number} 🔕 {silence_length(d)}", f"s:{short_id}:{d}")
                    for d in SILENCE_DURATIONS
                ]
            )
    if len(firing) > listed:
        more = len(firing) - listed
        lines.append(
            ngettext(
                "… and {count} more: all of them in Alertmanager, {url}",
                "… and {count} more: all of them in Alertmanager, {url}",
                more,
            ).format(count=more, url=html.escape(chat.config.alertmanager_url + "/#/alerts"))
        )
    chat.reply(message, "\n".join(lines), buttons)


def describe_silence(chat: Chat, silence: dict) -> str:
    """What a silence hides, as HTML: a /mute reads as what it does (its alertname matcher is
    a negative regex, "all but these"), any other silence as its matchers with their operators."""
    for rig in rig_mutes([silence], chat.config.watchdog.alertname):
        return _("all of {rig}'s alerts except the pipeline's own").format(
            rig=f"<b>{html.escape(rig)}</b>"
        )
    return f"<code>{html.escape(matchers_text(silence.get('matchers', [])))}</code>"


def shown_comment(comment: str) -> str:
    """A silence's comment for the chat: the bot's own in the chat's language, others as
    written."""
    mute = MUTE_COMMENT.fullmatch(comment)
    if mute:
        text = _("mute of {rig} from Telegram").format(rig=mute["rig"])
        return text + (f": {mute['reason']}" if mute["reason"] else "")
    button = BUTTON_COMMENT.fullmatch(comment)
    if button and button["length"] in SILENCE_DURATIONS:
        length = silence_length(button["length"])
        return _("silenced from Telegram for {duration}").format(duration=length) + (
            f": {button['what']}"
        )
    return comment


def _clip(text: str) -> str:
    """A label value or summary short enough for a listing (before HTML escaping)."""
    return text if len(text) <= CLIPPED_CHARS else text[: CLIPPED_CHARS - 1] + "…"


def silences(chat: Chat, message: Message, args: list[str]) -> None:
    active = chat.alertmanager.silences()
    if not active:
        chat.reply(message, _("No active silences."))
        return
    count = len(active)
    lines = [
        ngettext("<b>{count} active silence</b>", "<b>{count} active silences</b>", count).format(
            count=count
        )
    ]
    buttons = []
    for number, silence in enumerate(active[:LISTED], start=1):
        until = until_text(chat, silence.get("endsAt", ""))
        line = f"{number}. {describe_silence(chat, silence)} " + _("until {time}").format(
            time=html.escape(until)
        )
        if silence.get("createdBy"):
            who = silence["createdBy"].removeprefix("telegram:")
            line += _(" by {who}").format(who=html.escape(who))
        if silence.get("comment"):
            line += f": {html.escape(shown_comment(silence['comment'])[:200])}"
        lines.append(line)
        if number <= WITH_BUTTONS:
            label = _("#{number} 🔔 unsilence").format(number=number)
            buttons.append([Button(label, f"u:{silence['id']}")])
    chat.reply(message, "\n".join(lines), buttons)


def _matches_heartbeat(chat: Chat, matchers: list[dict]) -> bool:
    return any(
        m.get("name") == "alertname" and m.get("value") == chat.config.watchdog.alertname
        for m in matchers
    )


def silence_button(chat: Chat, query: ButtonPress, data: str, who: str, message: Message) -> None:
    parts = data.split(":")
    short_id, duration = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    target = chat.store.buttons.target(short_id) if short_id else None
    if target is None or duration not in SILENCE_DURATIONS:
        chat.answer(query, _("This button has expired; use /alerts for fresh ones."), alert=True)
        return
    silences, description = target
    silences = [m for m in silences if not _matches_heartbeat(chat, m)]
    if not silences:
        chat.answer(query, _("The Watchdog heartbeat is never silenced from here."), alert=True)
        return
    now = chat.clock()
    seconds = SILENCE_DURATIONS[duration]
    ids = [
        chat.alertmanager.create_silence(
            matchers,
            seconds,
            now,
            created_by=f"telegram:{who}",
            comment=f"silenced from Telegram for {duration}: {description}"[:500],
        )
        for matchers in silences
    ]
    chat.metrics.commands.labels("silence").inc()
    length = silence_length(duration)
    chat.answer(query, _("Silenced for {duration}.").format(duration=length))
    until = format_time(now + seconds, chat.config.zone)
    names = description.split("; ")
    if len(names) == 1:
        text = _("🔕 <b>{alert}</b> silenced for {duration} (until {time}) by {who}.").format(
            alert=html.escape(description), duration=length, time=until, who=html.escape(who)
        )
    else:
        text = ngettext(
            "🔕 {count} alert silenced for {duration} (until {time}) by {who}.",
            "🔕 {count} alerts silenced for {duration} (until {time}) by {who}.",
            len(names),
        ).format(count=len(names), duration=length, time=until, who=html.escape(who))
    if len(names) > 1:
        text += "\n" + "\n".join(f"• {html.escape(name)}" for name in names)
    label = _("🔔 Unsilence") if len(ids) == 1 else _("🔔 Unsilence #{number}")
    rows = [[Button(label.format(number=n), f"u:{i}")] for n, i in enumerate(ids, start=1)]
    chat.reply(message, text, rows)


def _without_row(message: Message, data: str) -> list[list[Button]]:
    """The message's keyboard less the row holding the pressed button."""
    return [
        list(row)
        for row in message.keyboard
        if row and not any(b.callback_data == data for b in row)
    ]


def unsilence_button(chat: Chat, query: ButtonPress, data: str, who: str, message: Message) -> None:
    silence_id = data[2:]
    if not SILENCE_ID.fullmatch(silence_id):
        chat.answer(query, _("This button is not one of mine."))
        return
    try:
        what = describe_silence(chat, chat.alertmanager.silence(silence_id))
    except (UpstreamError, ValueError, KeyError, TypeError):
        what = ""  # named by its id only; the expiry below says whether Alertmanager answers
    chat.alertmanager.expire_silence(silence_id)
    chat.metrics.commands.labels("unsilence").inc()
    chat.answer(query, _("Silence removed."))
    if message.message_id:
        try:
            chat.telegram.edit_buttons(
                message.chat_id, message.message_id, _without_row(message, data)
            )
        except TelegramError as exc:
            log.info("could not remove the unsilence button: %s", exc)
    name = what or f"<code>{silence_id}</code>"
    chat.reply(
        message, _("🔔 Silence {name} removed by {who}.").format(name=name, who=html.escape(who))
    )
