"""/graph: a chart of a named view (gpu, cpu, mem, disk) or any PromQL over a chosen range."""

from __future__ import annotations

import html
import re

from alert_bot.charts import query_chart
from alert_bot.chat.context import Chat
from alert_bot.chat.rig_state import CPU_BUSY
from alert_bot.config import ConfigError, parse_duration

GRAPHS = {
    "gpu": ("rigwatch_gpu_temperature_celsius", "GPU temperature (°C)"),
    "cpu": (CPU_BUSY, "CPU busy (ratio)"),
    "mem": (
        "1 - rigwatch_host_memory_available_bytes / rigwatch_host_memory_total_bytes",
        "memory used (ratio)",
    ),
    "disk": (
        '1 - rigwatch_host_filesystem_avail_bytes{mountpoint="/"}'
        ' / rigwatch_host_filesystem_size_bytes{mountpoint="/"}',
        "root filesystem used (ratio)",
    ),
}
MAX_RANGE_SECONDS = 30 * 86400


def graph(chat: Chat, message: dict, args: list[str]) -> None:
    if not args:
        chat.reply(message, "Usage: /graph gpu|cpu|mem|disk|&lt;PromQL&gt; [1h|6h|24h|7d]")
        return
    seconds = 3600.0
    range_text = "1h"
    if len(args) > 1 and re.fullmatch(r"\d+[mhd]", args[-1]):
        try:
            seconds = min(parse_duration("range", args[-1]), MAX_RANGE_SECONDS)
            range_text = args[-1]
            args = args[:-1]
        except ConfigError:
            pass
    what = " ".join(args)
    expr, title = GRAPHS.get(what.lower(), (what, what))
    try:
        png = query_chart(
            chat.prometheus, expr, seconds, chat.clock(), f"{title} — last {range_text}"
        )
    except ValueError:
        chat.reply(
            message, f"No data for <code>{html.escape(what)}</code> in the last {range_text}."
        )
        return
    chat.reply_photo(message, png, f"📈 {html.escape(title)} — last {html.escape(range_text)}")
