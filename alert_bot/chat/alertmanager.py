"""/alerts and /silences from Alertmanager, and the buttons under them: silence the alerts a
message shows for a while (s:SHORT_ID:DURATION), or remove a silence (u:SILENCE_ID)."""

from __future__ import annotations

import html
import re
import time

from alert_bot.chat.context import Chat, log
from alert_bot.render import SEVERITY_MARKERS, SILENCE_DURATIONS, alert_place, silence_matchers
from alert_bot.telegram import Button, TelegramError
from alert_bot.upstream import UpstreamError

LISTED = 30  # alerts or silences listed in one answer
WITH_BUTTONS = 10  # of those, the first ones get buttons
SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,62}")  # Alertmanager's ids are UUIDs


def is_heartbeat(chat: Chat, labels: dict[str, str]) -> bool:
    """The always-firing Watchdog: never listed as a problem, never offered for silencing
    (silencing it makes the bot report a silent pipeline)."""
    return labels.get("alertname") == chat.config.watchdog.alertname


def firing_alerts(chat: Chat) -> list[dict]:
    """Firing alerts, silenced ones included, without the heartbeat; a silenced alert carries
    ``silenced_until`` ("YYYY-MM-DD HH:MM", UTC), the latest end of the silences on it."""
    alerts = [
        a for a in chat.alertmanager.alerts(silenced=True) if not is_heartbeat(chat, a["labels"])
    ]
    silenced = [a for a in alerts if (a.get("status") or {}).get("silencedBy")]
    if silenced:
        try:
            ends = {s["id"]: s.get("endsAt", "") for s in chat.alertmanager.silences()}
        except UpstreamError:
            ends = {}
        for alert in silenced:
            times = [ends.get(i, "") for i in alert["status"]["silencedBy"]]
            alert["silenced_until"] = max(times)[:16].replace("T", " ") if any(times) else "?"
    return alerts


def silenced_note(alert: dict) -> str:
    until = alert.get("silenced_until")
    return f"🔕 silenced until {html.escape(until)} UTC" if until else ""


def alerts(chat: Chat, message: dict, args: list[str]) -> None:
    firing = firing_alerts(chat)
    if not firing:
        chat.reply(message, "✅ No firing alerts.")
        return
    silenced = sum(1 for a in firing if a.get("silenced_until"))
    title = f"<b>{len(firing)} firing alert(s)</b>"
    if silenced:
        title += f" ({silenced} silenced)"
    lines = [title]
    buttons: list[list[Button]] = []
    now = chat.clock()
    for number, alert in enumerate(firing[:LISTED], start=1):
        labels = alert.get("labels", {})
        marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
        where = " · ".join(html.escape(place) for place in alert_place(labels))
        summary = alert.get("annotations", {}).get("summary", "")
        line = f"{number}. {marker} <b>{html.escape(labels.get('alertname', '?'))}</b>"
        if where:
            line += f" · {where}"
        if summary:
            line += f" — {html.escape(summary)}"
        if alert.get("silenced_until"):
            line += f" · {silenced_note(alert)}"
        lines.append(line)
        if number <= WITH_BUTTONS and not alert.get("silenced_until"):
            short_id = chat.store.buttons.save(
                [silence_matchers(labels)], f"{labels.get('alertname', '?')} {where}", now
            )
            buttons.append(
                [Button(f"#{number} 🔕 {d}", f"s:{short_id}:{d}") for d in SILENCE_DURATIONS]
            )
    if len(firing) > LISTED:
        lines.append(f"… and {len(firing) - LISTED} more")
    chat.reply(message, "\n".join(lines), buttons)


def describe_matchers(silence: dict) -> str:
    return ", ".join(
        f"{m['name']}{'=~' if m.get('isRegex') else '='}{m['value']}"
        for m in silence.get("matchers", [])
    )


def silences(chat: Chat, message: dict, args: list[str]) -> None:
    active = chat.alertmanager.silences()
    if not active:
        chat.reply(message, "No active silences.")
        return
    lines = [f"<b>{len(active)} active silence(s)</b>"]
    buttons = []
    for number, silence in enumerate(active[:LISTED], start=1):
        matchers = describe_matchers(silence)
        until = silence.get("endsAt", "")[:16].replace("T", " ")
        line = f"{number}. <code>{html.escape(matchers)}</code> until {html.escape(until)} UTC"
        if silence.get("createdBy"):
            line += f" by {html.escape(silence['createdBy'])}"
        if silence.get("comment"):
            line += f": {html.escape(silence['comment'][:200])}"
        lines.append(line)
        if number <= WITH_BUTTONS:
            buttons.append([Button(f"#{number} 🔔 unsilence", f"u:{silence['id']}")])
    chat.reply(message, "\n".join(lines), buttons)


def _matches_heartbeat(chat: Chat, matchers: list[dict]) -> bool:
    return any(
        m.get("name") == "alertname" and m.get("value") == chat.config.watchdog.alertname
        for m in matchers
    )


def silence_button(chat: Chat, query: dict, data: str, who: str, message: dict) -> None:
    parts = data.split(":")
    short_id, duration = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    target = chat.store.buttons.target(short_id) if short_id else None
    if target is None or duration not in SILENCE_DURATIONS:
        chat.answer(query, "This button has expired; use /alerts for fresh ones.", alert=True)
        return
    silences, description = target
    silences = [m for m in silences if not _matches_heartbeat(chat, m)]
    if not silences:
        chat.answer(query, "The Watchdog heartbeat is never silenced from here.", alert=True)
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
    chat.answer(query, f"Silenced for {duration}.")
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + seconds))
    names = description.split("; ")
    if len(names) == 1:
        text = f"🔕 <b>{html.escape(description)}</b> silenced for {duration}"
    else:
        text = f"🔕 {len(names)} alerts silenced for {duration}"
    text += f" (until {until}) by {html.escape(who)}."
    if len(names) > 1:
        text += "\n" + "\n".join(f"• {html.escape(name)}" for name in names)
    label = "🔔 Unsilence" if len(ids) == 1 else "🔔 Unsilence #{}"
    rows = [[Button(label.format(n), f"u:{i}")] for n, i in enumerate(ids, start=1)]
    chat.reply(message, text, rows)


def _without_row(message: dict, data: str) -> list[list[Button]]:
    """The message's keyboard less the row holding the pressed button."""
    keyboard = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    rows = []
    for row in keyboard:
        if any(b.get("callback_data") == data for b in row):
            continue
        rows.append([Button(b["text"], b["callback_data"]) for b in row if "callback_data" in b])
    return [row for row in rows if row]


def unsilence_button(chat: Chat, query: dict, data: str, who: str, message: dict) -> None:
    silence_id = data[2:]
    if not SILENCE_ID.fullmatch(silence_id):
        chat.answer(query, "This button is not one of mine.")
        return
    try:
        what = describe_matchers(chat.alertmanager.silence(silence_id))
    except (UpstreamError, ValueError, KeyError, TypeError):
        what = ""  # named by its id only; the expiry below says whether Alertmanager answers
    chat.alertmanager.expire_silence(silence_id)
    chat.metrics.commands.labels("unsilence").inc()
    chat.answer(query, "Silence removed.")
    if message.get("message_id"):
        try:
            chat.telegram.edit_buttons(
                message["chat"]["id"], message["message_id"], _without_row(message, data)
            )
        except TelegramError as exc:
            log.info("could not remove the unsilence button: %s", exc)
    name = f"<code>{html.escape(what)}</code>" if what else f"<code>{silence_id}</code>"
    chat.reply(message, f"🔔 Silence {name} removed by {html.escape(who)}.")
