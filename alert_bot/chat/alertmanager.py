"""/alerts and /silences from Alertmanager, and the buttons under them: silence an alert for
a while (s:SHORT_ID:DURATION), or remove a silence (u:SILENCE_ID)."""

from __future__ import annotations

import html
import re
import time

from alert_bot.chat.context import Chat, log
from alert_bot.render import SEVERITY_MARKERS, SILENCE_DURATIONS, alert_place, silence_matchers
from alert_bot.telegram import Button, TelegramError

LISTED = 30  # alerts or silences listed in one answer
WITH_BUTTONS = 10  # of those, the first ones get buttons
SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,62}")  # Alertmanager's ids are UUIDs


def alerts(chat: Chat, message: dict, args: list[str]) -> None:
    firing = chat.alertmanager.alerts()
    if not firing:
        chat.reply(message, "✅ No firing alerts.")
        return
    lines = [f"<b>{len(firing)} firing alert(s)</b>"]
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
        lines.append(line)
        if number <= WITH_BUTTONS:
            short_id = chat.store.buttons.save(
                silence_matchers(labels), f"{labels.get('alertname', '?')} {where}", now
            )
            buttons.append(
                [Button(f"#{number} 🔕 {d}", f"s:{short_id}:{d}") for d in SILENCE_DURATIONS]
            )
    if len(firing) > LISTED:
        lines.append(f"… and {len(firing) - LISTED} more")
    chat.reply(message, "\n".join(lines), buttons)


def silences(chat: Chat, message: dict, args: list[str]) -> None:
    active = chat.alertmanager.silences()
    if not active:
        chat.reply(message, "No active silences.")
        return
    lines = [f"<b>{len(active)} active silence(s)</b>"]
    buttons = []
    for number, silence in enumerate(active[:LISTED], start=1):
        matchers = ", ".join(
            f"{m['name']}{'=~' if m.get('isRegex') else '='}{m['value']}"
            for m in silence.get("matchers", [])
        )
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


def silence_button(chat: Chat, query: dict, data: str, who: str, message: dict) -> None:
    parts = data.split(":")
    short_id, duration = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    target = chat.store.buttons.target(short_id) if short_id else None
    if target is None or duration not in SILENCE_DURATIONS:
        chat.answer(query, "This button has expired; use /alerts for fresh ones.", alert=True)
        return
    matchers, description = target
    now = chat.clock()
    seconds = SILENCE_DURATIONS[duration]
    silence_id = chat.alertmanager.create_silence(
        matchers,
        seconds,
        now,
        created_by=f"telegram:{who}",
        comment=f"silenced from Telegram for {duration}: {description}"[:500],
    )
    chat.metrics.commands.labels("silence").inc()
    chat.answer(query, f"Silenced for {duration}.")
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + seconds))
    text = (
        f"🔕 <b>{html.escape(description)}</b> silenced for {duration} (until {until})"
        f" by {html.escape(who)}."
    )
    chat.reply(message, text, [[Button("🔔 Unsilence", f"u:{silence_id}")]])


def unsilence_button(chat: Chat, query: dict, data: str, who: str, message: dict) -> None:
    silence_id = data[2:]
    if not SILENCE_ID.fullmatch(silence_id):
        chat.answer(query, "This button is not one of mine.")
        return
    chat.alertmanager.expire_silence(silence_id)
    chat.metrics.commands.labels("unsilence").inc()
    chat.answer(query, "Silence removed.")
    if message.get("message_id"):
        try:
            chat.telegram.edit_buttons(message["chat"]["id"], message["message_id"], None)
        except TelegramError as exc:
            log.info("could not remove the unsilence button: %s", exc)
    chat.reply(message, f"🔔 Silence removed by {html.escape(who)}.")
