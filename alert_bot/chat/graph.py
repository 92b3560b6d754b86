"""/graph: a chart of a named view (gpu, cpu, mem, disk), narrowed to a rig and a card, or of
any PromQL, over a chosen range."""

from __future__ import annotations

import html

from alert_bot.charts.queries import query_chart
from alert_bot.chat.context import Chat
from alert_bot.chat.rig_state import CPU_BUSY
from alert_bot.i18n import (
    N_,
    DurationError,
    _,
    format_window,
    looks_like_duration,
    parse_typed_duration,
)
from alert_bot.telegram.types import Message

GRAPHS = {
    # The card's name joined in, so the legend says "GPU 0 (RTX 4090) on rig1".
    "gpu": (
        "rigwatch_gpu_temperature_celsius"
        " * on (job, instance, gpu, uuid) group_left (name) rigwatch_gpu_info",
        N_("GPU temperature"),
    ),
    "cpu": (CPU_BUSY, N_("CPU busy")),
    "mem": (
        "1 - rigwatch_host_memory_available_bytes / rigwatch_host_memory_total_bytes",
        N_("memory used"),
    ),
    "disk": (
        '1 - rigwatch_host_filesystem_avail_bytes{mountpoint="/"}'
        ' / rigwatch_host_filesystem_size_bytes{mountpoint="/"}',
        N_("root filesystem used"),
    ),
}
MAX_RANGE_SECONDS = 30 * 86400
USAGE = N_(
    "Usage: /graph gpu|cpu|mem|disk [rig] [gpu] [1h|6h|24h|7d], e.g. /graph gpu rig1 0 6h;"
    " or /graph &lt;PromQL&gt; [range]"
)


def graph(chat: Chat, message: Message, args: list[str]) -> None:
    if not args:
        chat.reply(message, _(USAGE))
        return
    seconds = 3600.0
    if len(args) > 1 and looks_like_duration(args[-1]):
        try:
            seconds = min(parse_typed_duration(args[-1]), MAX_RANGE_SECONDS)
        except DurationError as exc:
            chat.reply(message, html.escape(str(exc)))
            return
        args = args[:-1]
    range_text = format_window(seconds)
    narrow: dict[str, str] = {}
    view = GRAPHS.get(args[0].lower())
    if view is not None and len(args) > 1:
        # A named view takes a rig, and for gpu a card index: /graph gpu rig1 0.
        most = 3 if args[0].lower() == "gpu" else 2
        if len(args) > most or (len(args) == 3 and not args[2].isdigit()):
            chat.reply(message, _(USAGE))
            return
        narrow["rig"] = args[1]
        if len(args) == 3:
            narrow["gpu"] = args[2]
    if view is not None:
        expr, title = view[0], _(view[1])
        what = args[0].lower()
    else:
        what = " ".join(args)
        expr, title = what, what
    where = ""
    if narrow and "gpu" in narrow:
        where = _(" on {rig} GPU {gpu}").format(rig=narrow["rig"], gpu=narrow["gpu"])
    elif narrow:
        where = _(" on {rig}").format(rig=narrow["rig"])
    heading = _("{title}{where} — last {range}").format(title=title, where=where, range=range_text)
    try:
        png = query_chart(
            chat.prometheus,
            expr,
            seconds,
            chat.clock(),
            heading,
            zone=chat.config.zone,
            narrow=narrow or None,
        )
    except ValueError:
        chat.reply(
            message,
            _("No data for <code>{what}</code> in the last {range}.").format(
                what=html.escape(what + where), range=range_text
            ),
        )
        return
    chat.reply_photo(message, png, f"📈 {html.escape(heading)}")
