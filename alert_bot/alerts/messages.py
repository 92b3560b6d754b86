"""Packing rendered alerts into Telegram messages: each alert a block, a backlog packed into as few
messages as the length limit allows (compact when it must be), a block too long for one
message split across several with its title carried on."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from alert_bot.alerts.model import Alert, Notification
from alert_bot.i18n import N_, _
from alert_bot.telegram.html import split_html, utf16_len, visible_length

TRUNCATED_NOTE = N_("…(truncated)")

SEPARATOR = "\n\n"

CONTINUED_TITLE_CHARS = 60


@dataclass
class Block:
    """A piece of a message: one alert (or one part of a long alert, or a notice)."""

    html: str
    length: int
    notification_id: int
    alert_index: int
    completes_alert: bool
    alert: Alert | None = None
    notification: Notification | None = None
    part_index: int = 0


@dataclass
class OutgoingMessage:
    html: str
    blocks: list[Block] = field(default_factory=list)
    compact: bool = False

    @property
    def alerts(self) -> list[Alert]:
        return [b.alert for b in self.blocks if b.alert is not None and b.completes_alert]


def blocks_for(
    markup: str,
    notification_id: int,
    alert_index: int,
    budget: int,
    max_parts: int,
    alert: Alert | None = None,
    notification: Notification | None = None,
    title: str = "",
) -> list[Block]:
    """One block, or several when the markup is longer than a message; never more than
    max_parts, the last then ending in a visible truncation note."""
    length = visible_length(markup)
    if length <= budget:
        return [Block(markup, length, notification_id, alert_index, True, alert, notification)]
    # The title is a label value of any length: shortened, so the note leaves room for text.
    if len(title) > CONTINUED_TITLE_CHARS:
        title = title[: CONTINUED_TITLE_CHARS - 1] + "…"
    bare = "<i>" + _("(continued)") + "</i>\n"
    continued = (
        "<i>" + _("(continued: {title})").format(title=html.escape(title)) + "</i>\n"
        if title
        else bare
    )
    note = "\n" + _(TRUNCATED_NOTE)
    if visible_length(continued) > budget // 4:  # a small budget: the text needs the room
        continued = bare
    inner_budget = budget - visible_length(continued) - utf16_len(note)
    pieces = split_html(markup, inner_budget)
    if len(pieces) > max_parts:
        pieces = pieces[:max_parts]
        pieces[-1] = pieces[-1] + html.escape(note)
    blocks = []
    for number, piece in enumerate(pieces):
        text = piece if number == 0 else continued + piece
        blocks.append(
            Block(
                text,
                visible_length(text),
                notification_id,
                alert_index,
                number == len(pieces) - 1,
                alert,
                notification,
                number,
            )
        )
    return blocks


def pack(blocks: list[Block], budget: int, compact: bool = False) -> list[OutgoingMessage]:
    """Greedy packing in order: each message takes blocks while the total fits. Compact
    (one-line) blocks are separated by a line break, full ones by an empty line."""
    messages: list[OutgoingMessage] = []
    current: list[Block] = []
    used = 0
    joiner = "\n" if compact else SEPARATOR
    separator = utf16_len(joiner)
    for block in blocks:
        extra = block.length + (separator if current else 0)
        if current and used + extra > budget:
            messages.append(OutgoingMessage(joiner.join(b.html for b in current), current, compact))
            current, used = [], 0
            extra = block.length
        current.append(block)
        used += extra
    if current:
        messages.append(OutgoingMessage(joiner.join(b.html for b in current), current, compact))
    return messages
