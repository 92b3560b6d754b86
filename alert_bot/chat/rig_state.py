"""/status, /gpu and /cpu (and the plain words gpu and cpu): each rig's cards and host, read
from Prometheus, with /status adding the rig's firing alerts from Alertmanager."""

from __future__ import annotations

import html
import re

from alert_bot.chat.context import Chat
from alert_bot.render import SEVERITY_MARKERS
from alert_bot.upstream import UpstreamError

CPU_BUSY = '1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total{mode="idle"}[2m]))'
CPU_CHIPS = re.compile(r"coretemp|k10temp|zenpower|cpu|acpitz|soc", re.IGNORECASE)
GIB = 1024**3


def rig_of(metric: dict[str, str]) -> str:
    return metric.get("rig") or metric.get("instance", "?")


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _wanted(rig: str, wanted: str | None) -> bool:
    return wanted is None or rig == wanted or rig.split(":")[0] == wanted


def _by_card(chat: Chat, expr: str) -> dict[tuple[str, str], float]:
    return {
        (rig_of(r["metric"]), r["metric"].get("gpu", "")): r["value"]
        for r in chat.prometheus.query(expr)
    }


def _by_rig(chat: Chat, expr: str) -> dict[str, float]:
    return {rig_of(r["metric"]): r["value"] for r in chat.prometheus.query(expr)}


def gpu_lines(chat: Chat, wanted: str | None) -> dict[str, list[str]]:
    """One line per card, grouped by rig."""
    temps = _by_card(chat, "rigwatch_gpu_temperature_celsius")
    up = _by_card(chat, "rigwatch_gpu_up")
    util = _by_card(chat, "rigwatch_gpu_utilization_ratio")
    used = _by_card(chat, "rigwatch_gpu_memory_used_bytes")
    total = _by_card(chat, "rigwatch_gpu_memory_total_bytes")
    power = _by_card(chat, "rigwatch_gpu_power_watts")
    limit = _by_card(chat, "rigwatch_gpu_power_limit_watts")
    fan = _by_card(chat, "avg without (fan) (rigwatch_gpu_fan_speed_ratio)")
    names = {
        (rig_of(r["metric"]), r["metric"].get("gpu", "")): r["metric"].get("name", "")
        for r in chat.prometheus.query("rigwatch_gpu_info")
    }
    cards = sorted(
        {*temps, *up, *names},
        key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0, k[1]),
    )
    result: dict[str, list[str]] = {}
    for key in cards:
        rig, gpu = key
        if not _wanted(rig, wanted):
            continue
        line = f"GPU {html.escape(gpu)}"
        if names.get(key):
            line += f" · {html.escape(names[key])}"
        if up.get(key) == 0:
            result.setdefault(rig, []).append(line + ": ❌ lost / unreachable")
            continue
        parts = []
        if key in temps:
            parts.append(f"🌡 {temps[key]:.0f} °C")
        if key in util:
            parts.append(f"util {_pct(util[key])}")
        if key in used and key in total and total[key] > 0:
            parts.append(f"mem {used[key] / GIB:.1f}/{total[key] / GIB:.1f} GiB")
        if key in power:
            watts = f"{power[key]:.0f}"
            if key in limit:
                watts += f"/{limit[key]:.0f}"
            parts.append(f"{watts} W")
        if key in fan:
            parts.append(f"fan {_pct(fan[key])}")
        result.setdefault(rig, []).append(line + ": " + " · ".join(parts))
    return result


def host_lines(chat: Chat, wanted: str | None) -> dict[str, str]:
    """One line per rig's host: CPU temperature and load, memory, disk."""
    temps: dict[str, float] = {}
    any_temps: dict[str, float] = {}
    for r in chat.prometheus.query("rigwatch_host_temperature_celsius"):
        rig = rig_of(r["metric"])
        any_temps[rig] = max(any_temps.get(rig, r["value"]), r["value"])
        if CPU_CHIPS.search(r["metric"].get("chip", "")):
            temps[rig] = max(temps.get(rig, r["value"]), r["value"])
    busy = _by_rig(chat, CPU_BUSY)
    load = _by_rig(chat, "rigwatch_host_load1")
    mem_total = _by_rig(chat, "rigwatch_host_memory_total_bytes")
    mem_avail = _by_rig(chat, "rigwatch_host_memory_available_bytes")
    disks: dict[str, tuple[str, float]] = {}
    for r in chat.prometheus.query(
        "1 - rigwatch_host_filesystem_avail_bytes / rigwatch_host_filesystem_size_bytes"
    ):
        rig = rig_of(r["metric"])
        mount = r["metric"].get("mountpoint", "?")
        current = disks.get(rig)
        if mount == "/" or current is None or (current[0] != "/" and r["value"] > current[1]):
            disks[rig] = (mount, r["value"])
    result = {}
    for rig in sorted({*any_temps, *busy, *load, *mem_total, *disks}):
        if not _wanted(rig, wanted):
            continue
        parts = []
        temp = temps.get(rig, any_temps.get(rig))
        if temp is not None:
            parts.append(f"CPU 🌡 {temp:.0f} °C")
        if rig in busy:
            parts.append(f"busy {_pct(busy[rig])}")
        if rig in load:
            parts.append(f"load {load[rig]:.2f}")
        if rig in mem_total and rig in mem_avail and mem_total[rig] > 0:
            used = mem_total[rig] - mem_avail[rig]
            total_gib = mem_total[rig] / GIB
            parts.append(
                f"mem {_pct(used / mem_total[rig])} ({used / GIB:.1f}/{total_gib:.1f} GiB)"
            )
        if rig in disks:
            parts.append(f"disk {html.escape(disks[rig][0])} {_pct(disks[rig][1])}")
        result[rig] = " · ".join(parts)
    return result


def _no_data(chat: Chat, message: dict, wanted: str | None) -> None:
    where = f" for rig {html.escape(wanted)}" if wanted else ""
    chat.reply(
        message,
        f"No data from Prometheus{where}. Is the exporter running and scraped?",
    )


def gpu(chat: Chat, message: dict, args: list[str]) -> None:
    wanted = args[0] if args else None
    cards = gpu_lines(chat, wanted)
    if not cards:
        _no_data(chat, message, wanted)
        return
    blocks = [f"🖥 <b>{html.escape(rig)}</b>\n" + "\n".join(lines) for rig, lines in cards.items()]
    chat.reply(message, "\n\n".join(blocks))


def cpu(chat: Chat, message: dict, args: list[str]) -> None:
    wanted = args[0] if args else None
    hosts = host_lines(chat, wanted)
    if not hosts:
        _no_data(chat, message, wanted)
        return
    chat.reply(
        message,
        "\n".join(f"🖥 <b>{html.escape(rig)}</b>: {line}" for rig, line in hosts.items()),
    )


def status(chat: Chat, message: dict, args: list[str]) -> None:
    wanted = args[0] if args else None
    cards = gpu_lines(chat, wanted)
    hosts = host_lines(chat, wanted)
    try:
        alerts = chat.alertmanager.alerts()
        alert_error = None
    except UpstreamError as exc:
        alerts, alert_error = [], str(exc)
    rigs = sorted({*cards, *hosts})
    if not rigs:
        _no_data(chat, message, wanted)
        return
    energy_today = _energy_today(chat)
    blocks = []
    for rig in rigs:
        lines = [f"🖥 <b>{html.escape(rig)}</b>"]
        if rig in hosts:
            lines.append(hosts[rig])
        lines += cards.get(rig, [])
        if rig in energy_today:
            lines.append(energy_today[rig])
        firing = [a for a in alerts if rig_of(a.get("labels", {})) == rig]
        for alert in firing:
            labels = alert.get("labels", {})
            marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
            card = f" GPU {labels['gpu']}" if labels.get("gpu") else ""
            lines.append(f"{marker} {html.escape(labels.get('alertname', '?') + card)}")
        if not firing and not alert_error:
            lines.append("✅ no firing alerts")
        blocks.append("\n".join(lines))
    other = [a for a in alerts if rig_of(a.get("labels", {})) not in rigs]
    if other and wanted is None:
        blocks.append(
            "Other firing alerts: "
            + html.escape(", ".join(sorted({a["labels"].get("alertname", "?") for a in other})))
        )
    if alert_error:
        blocks.append(f"⚠️ {html.escape(alert_error)}")
    chat.reply(message, "\n\n".join(blocks))


def _energy_today(chat: Chat) -> dict[str, str]:
    """rig -> today's kWh and cost line; none when Prometheus cannot say (status goes on)."""
    from alert_bot.runs.chat import today_lines  # which imports this package

    try:
        return today_lines(chat)
    except UpstreamError:
        return {}
