"""Threading alerts in the chat: a resolved notice replies to the firing message it closes, and
that message, once all its alerts resolved, is edited to say so (through the outbox, like any
send, so the edit survives a restart and waits its turn under the flood limits)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable

from alert_bot.alerts.messages import OutgoingMessage
from alert_bot.alerts.model import Alert, valid_time
from alert_bot.i18n import _, format_duration, ngettext
from alert_bot.store import NewNotification, Store
from alert_bot.store.threads import ClosedMessage
from alert_bot.telegram.html import split_html, utf16_len, visible_length

EDIT_LIMIT = 4096  # characters of an edited message, as Telegram counts them


def alert_key(alert: Alert) -> str:
    """One firing of one alert: its fingerprint (its labels when it has none) and start. The
    threads table holds these keys: their form stays what earlier releases wrote."""
    identity = alert.fingerprint or json.dumps(dict(alert.labels), sort_keys=True)
    return f"{identity}@{alert.starts_at}"


def _moment(text: str) -> float | None:
    moment = valid_time(text)
    return moment.timestamp() if moment else None


def reply_target(store: Store, chat_id: int, thread_id: int | None, message: OutgoingMessage):
    """The firing message a message of resolved alerts should reply to (that of its first
    resolved alert the bot still knows), or None."""
    for alert in message.alerts:
        if alert.status == "resolved":
            found = store.threads.firing_message(chat_id, thread_id, alert_key(alert))
            if found is not None:
                return found
    return None


def record_delivery(
    store: Store,
    chat_id: int,
    thread_id: int | None,
    message: OutgoingMessage,
    message_id: int,
    sent_html: str,
    as_html: bool,
    now: float,
    began: Callable[[Alert], float | None] | None = None,
) -> int:
    """Remember what this message announced; queue the edit of every firing message all of
    whose alerts have now resolved. Returns the number of edits queued. began says when an
    alert's trouble began (the renderer's: Prometheus's activeAt, else startsAt), what
    "lasted" counts from."""
    alerts = message.alerts
    start = began or (lambda alert: _moment(alert.starts_at))
    firing = [(alert_key(a), start(a)) for a in alerts if a.status == "firing"]
    resolved = [(alert_key(a), _moment(a.ends_at)) for a in alerts if a.status == "resolved"]
    if not firing and not resolved:
        return 0
    with store.database.transaction() as db:
        if firing:
            store.threads.record_firing(
                db, chat_id, thread_id, message_id, sent_html, as_html, firing, now
            )
        closed = store.threads.record_resolved(db, chat_id, thread_id, resolved, now)
        edits = [NewNotification(chat_id, thread_id, "edit", edit_payload(item)) for item in closed]
        store.outbox.insert(db, edits, now)
    return len(edits)


def resolved_header(closed: ClosedMessage, as_html: bool) -> str:
    lasted = format_duration(closed.lasted) if closed.lasted else ""
    if closed.alerts > 1:
        words = ngettext("ALL {count} RESOLVED", "ALL {count} RESOLVED", closed.alerts).format(
            count=closed.alerts
        )
        detail = _(" · the longest lasted {duration}").format(duration=lasted) if lasted else ""
    else:
        words = _("RESOLVED")
        detail = _(" · lasted {duration}").format(duration=lasted) if lasted else ""
    if as_html:
        return f"✅ <b>{words}</b>{html.escape(detail)}\n\n"
    return f"✅ {words}{detail}\n\n"


def _without_ago(text: str) -> str:
    """A firing message's text without its " (10s ago)": true when it was sent, stale in
    the edit that says it resolved (the default layout's words, in the bot's language)."""
    words = re.escape(_(" ({duration} ago)")).replace(re.escape("{duration}"), r"[^()<>\n]{1,40}")
    return re.sub(words, "", text)


def edit_payload(closed: ClosedMessage) -> dict:
    """The edit marking a firing message resolved: a header line over its text (without its
    stale "ago"), kept whole when it fits in a message, else cut with a note."""
    message = closed.message
    header = resolved_header(closed, message.as_html)
    text = _without_ago(message.html)
    if message.as_html:
        room = EDIT_LIMIT - visible_length(header)
        if visible_length(text) > room:
            text = split_html(text, room - 1)[0] + "…"
    else:
        room = EDIT_LIMIT - utf16_len(header) - 1  # one for the "…"
        if utf16_len(text) > room:
            text = text[:room]  # at most room units: a character is at least one
            while utf16_len(text) > room:  # characters outside the BMP count twice
                text = text[:-1]
            text += "…"
    return {"message_id": message.message_id, "text": header + text, "html": message.as_html}
