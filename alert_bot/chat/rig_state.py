"""/status, /gpu and /cpu (and the plain words gpu and cpu): each rig's cards and host, read
from Prometheus, with /status adding the rig's firing alerts from Alertmanager."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Mapping
from typing import Any

from alert_bot.alerts.render import SEVERITY_MARKERS
from alert_bot.chat import mute
from alert_bot.chat.alertmanager import firing_alerts, silenced_note
from alert_bot.chat.context import Chat
from alert_bot.chat.runs import today_lines
from alert_bot.chat.silencing import rig_mutes
from alert_bot.i18n import N_, _, format_number, format_time
from alert_bot.telegram.types import Message
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.units import GIB

CPU_BUSY = '1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total{mode="idle"}[2m]))'
CPU_CHIPS = re.compile(r"coretemp|k10temp|zenpower|cpu|acpitz|soc", re.IGNORECASE)
# The alert rules' temperature thresholds per card, as prometheus/rules/gpu.yml records them (the
# numbers are written there once): near slowdown (GpuTemperatureNearSlowdown) and past it
# (GpuTemperatureCritical). Where Prometheus has no such series (the rules not loaded) a card
# gets no mark: the bot cannot know where its thresholds are.
NEAR_SLOWDOWN = "gpu:rigwatch_gpu_temperature_near_slowdown_celsius:threshold"
SLOWDOWN = "gpu:rigwatch_gpu_temperature_slowdown_celsius:threshold"
# Throttle reasons worth a mark: the card is held back by heat or its power brake
# (sw_power_cap is normal for a card at full load, as in the rules).
MARKED_THROTTLE = ("sw_thermal", "hw_thermal", "hw_slowdown", "hw_power_brake")
# Cards NVML counts but cannot open, and cards on the PCI bus the driver does not serve (lost
# before the exporter started, not brought up, bound to another driver); each with its start.
UNOPENED = "rigwatch_gpu_open_failure_info"
UNOPENED_SINCE = "min_over_time(timestamp(rigwatch_gpu_open_failure_info)[24h:10s])"
NOT_SERVED = (
    "(rigwatch_pci_gpu_nvml_up == 0)"
    " * on (job, instance, pci_bus_id) group_left (driver) rigwatch_pci_gpu_info"
    " unless on (job, instance, pci_bus_id) rigwatch_gpu_open_failure_info"
    " unless on (job, instance) (rigwatch_nvml_up == 0)"
)
NOT_SERVED_SINCE = f"min_over_time(timestamp({NOT_SERVED})[24h:10s])"
# A card the exporter had open that reads rigwatch_gpu_up 0: since the last time it read 1
# (to the second within a quarter hour, to 10 s within 24 h; else since its first 0 there).
# Why: its reads missed the scrape deadline when the rig's gpu collector did (a hung card),
# else NVML answered GPU_IS_LOST (until NVML is re-initialised and it becomes a card that
# cannot be opened, with its reason).
DOWN_SINCE = (
    "max_over_time(timestamp(rigwatch_gpu_up == 1)[15m:1s])"
    " or max_over_time(timestamp(rigwatch_gpu_up == 1)[24h:10s])"
    " or min_over_time(timestamp(rigwatch_gpu_up == 0)[24h:10s])"
)
HUNG = 'rigwatch_scrape_collector_success{collector="gpu"} == 0'
REASONS = {"gpu_is_lost": N_("lost"), "no_permission": N_("no permission to open it")}
# Every exporter serves this constant on every scrape: its newest sample is when the rig last
# reported. A rig whose series went stale has no instant value, so subqueries look back: to
# the second over the last quarter hour, to the minute over the day; and now, the sample's own
# time if Prometheus still looks back to it (a push that stopped has no stale marker).
REPORTS = "rigwatch_exporter_build_info"
LAST_SEEN = [
    f"max by (job, rig, instance) (last_over_time(timestamp({REPORTS})[{window}]))"
    for window in ("15m:1s", "1d:1m")
] + [f"max by (job, rig, instance) (timestamp({REPORTS}))"]
# A rig silent for this many scrape intervals has stopped reporting: its last values are
# old, never shown as current.
SILENT_INTERVALS = 3


def rig_of(metric: Mapping[str, str]) -> str:
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


def silent_rigs(chat: Chat, wanted: str | None) -> dict[str, str]:
    """rig -> "⚠️ no data since 10:29 MSK" for every rig that reported within the last day but
    not within SILENT_INTERVALS of its job's scrape interval (stopped, dropped out of the
    targets, its pushes refused), in the owner's time zone."""
    overall, jobs = chat.prometheus.scrape_intervals()
    now = chat.clock()
    newest: dict[str, tuple[float, str]] = {}
    for expr in LAST_SEEN:
        for r in chat.prometheus.query(expr):
            rig, job = rig_of(r["metric"]), r["metric"].get("job", "")
            if r["value"] >= newest.get(rig, (0.0, ""))[0]:
                newest[rig] = (r["value"], job)
    silent = {}
    for rig, (moment, job) in newest.items():
        if not _wanted(rig, wanted) or now - moment <= SILENT_INTERVALS * jobs.get(job, overall):
            continue
        zone = chat.config.zone
        same_day = dt.datetime.fromtimestamp(moment, zone).date() == (
            dt.datetime.fromtimestamp(now, zone).date()
        )
        when = format_time(moment, zone, with_date=not same_day)
        silent[rig] = _("⚠️ no data since {time}").format(time=when)
    return silent


def _live(lines: dict[str, Any], silent: dict[str, str]) -> dict[str, Any]:
    """A rig's lines only where it reports now: a silent rig's last values are never current."""
    return {rig: value for rig, value in lines.items() if rig not in silent}


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
    near = _by_card(chat, NEAR_SLOWDOWN)
    slowdown = _by_card(chat, SLOWDOWN)
    throttling: dict[tuple[str, str], list[str]] = {}
    for r in chat.prometheus.query("rigwatch_gpu_throttle_reason_active == 1"):
        reason = r["metric"].get("reason", "")
        if reason in MARKED_THROTTLE:
            key = (rig_of(r["metric"]), r["metric"].get("gpu", ""))
            throttling.setdefault(key, []).append(reason)
    names = {
        (rig_of(r["metric"]), r["metric"].get("gpu", "")): r["metric"].get("name", "")
        for r in chat.prometheus.query("rigwatch_gpu_info")
    }
    unreachable = unreachable_lines(chat)
    down_since: dict[tuple[str, ...], str] = {}
    hung: set[str] = set()
    if any(value == 0 for value in up.values()):
        down_since = _since(chat, DOWN_SINCE, "gpu")
        hung = set(_by_rig(chat, HUNG))
    cards = sorted(
        {*temps, *up, *names, *unreachable},
        key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0, k[1]),
    )
    result: dict[str, list[str]] = {}
    for key in cards:
        rig, gpu = key
        if not _wanted(rig, wanted):
            continue
        if key in unreachable:
            result.setdefault(rig, []).append(unreachable[key])
            continue
        line = _("GPU {gpu}").format(gpu=html.escape(gpu))
        if names.get(key):
            line += f" · {html.escape(names[key])}"
        if up.get(key) == 0:
            if rig in hung:
                why = _(": ❌ not answering: its reads missed the scrape deadline{since}")
            else:
                why = _(": ❌ lost: the driver no longer reaches it{since}")
            result.setdefault(rig, []).append(line + why.format(since=down_since.get(key, "")))
            continue
        parts = []
        if key in temps:
            mark = _heat_mark(temps[key], near.get(key), slowdown.get(key))
            parts.append(f"🌡 {temps[key]:.0f} °C" + mark)
        if key in util:
            parts.append(_("util {percent}").format(percent=_pct(util[key])))
        if key in used and key in total and total[key] > 0:
            parts.append(
                _("mem {used}/{total} GiB").format(
                    used=format_number(used[key] / GIB), total=format_number(total[key] / GIB)
                )
            )
        if key in power:
            watts = f"{power[key]:.0f}"
            if key in limit:
                watts += f"/{limit[key]:.0f}"
            parts.append(_("{watts} W").format(watts=watts))
        if key in fan:
            parts.append(_("fan {percent}").format(percent=_pct(fan[key])))
        if key in throttling:
            reasons = ", ".join(sorted(throttling[key]))
            parts.append(_("⚠️ <b>throttling</b> ({reasons})").format(reasons=reasons))
        result.setdefault(rig, []).append(line + ": " + " · ".join(parts))
    return result


def _heat_mark(celsius: float, near: float | None, critical: float | None) -> str:
    """A mark after a temperature that is past the alert rules' thresholds: 🔥 near the card's
    slowdown, 🔥🔥 past it."""
    if critical is not None and celsius >= critical:
        return _(" 🔥🔥 <b>past slowdown {celsius} °C</b>").format(celsius=f"{critical:.0f}")
    if near is not None and critical is not None and celsius >= near:
        return _(" 🔥 <b>near slowdown {celsius} °C</b>").format(celsius=f"{critical:.0f}")
    return ""


def _since(chat: Chat, expr: str, *keys: str) -> dict[tuple[str, ...], str]:
    """When each series of expr started (within 24 h), as " since 07:12 CEST" (the owner's
    time zone)."""
    since = {}
    for r in chat.prometheus.query(expr):
        moment = format_time(r["value"], chat.config.zone, with_date=False)
        key = (rig_of(r["metric"]), *(r["metric"].get(k, "") for k in keys))
        since[key] = _(" since {time}").format(time=moment)
    return since


def unreachable_lines(chat: Chat) -> dict[tuple[str, str], str]:
    """A line of its own for every card the rig has but cannot use, keyed like the card lines
    ((rig, index), or (rig, bus id) for a card NVML never counted): never silently fewer."""
    lines: dict[tuple[str, str], str] = {}
    since = _since(chat, UNOPENED_SINCE, "gpu")
    for r in chat.prometheus.query(UNOPENED):
        metric = r["metric"]
        rig, gpu, bus_id = rig_of(metric), metric.get("gpu", ""), metric.get("pci_bus_id", "")
        reason = metric.get("reason", "")
        why = _(REASONS[reason]) if reason in REASONS else reason.replace("_", " ")
        where = f" ({html.escape(bus_id)})" if bus_id else ""
        lines[rig, gpu] = _(
            "❌ GPU {gpu}{bus} on {rig}: on the bus, the driver cannot reach it — {why}{since}"
        ).format(
            gpu=html.escape(gpu),
            bus=where,
            rig=html.escape(rig),
            why=html.escape(why or _("unknown error")),
            since=since.get((rig, gpu), ""),
        )
    since = _since(chat, NOT_SERVED_SINCE, "pci_bus_id")
    for r in chat.prometheus.query(NOT_SERVED):
        metric = r["metric"]
        rig, bus_id = rig_of(metric), metric.get("pci_bus_id", "")
        driver = metric.get("driver", "none")
        held = _("no driver") if driver == "none" else _("held by {driver}").format(driver=driver)
        lines[rig, bus_id] = _(
            "❌ GPU {bus} on {rig}: on the bus, not served by the NVIDIA driver ({held}){since}"
        ).format(
            bus=html.escape(bus_id),
            rig=html.escape(rig),
            held=html.escape(held),
            since=since.get((rig, bus_id), ""),
        )
    return lines


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
            parts.append(_("CPU 🌡 {celsius} °C").format(celsius=f"{temp:.0f}"))
        if rig in busy:
            parts.append(_("busy {percent}").format(percent=_pct(busy[rig])))
        if rig in load:
            parts.append(_("load {load}").format(load=format_number(load[rig], ".2f")))
        if rig in mem_total and rig in mem_avail and mem_total[rig] > 0:
            used = mem_total[rig] - mem_avail[rig]
            total_gib = mem_total[rig] / GIB
            parts.append(
                _("mem {percent} ({used}/{total} GiB)").format(
                    percent=_pct(used / mem_total[rig]),
                    used=format_number(used / GIB),
                    total=format_number(total_gib),
                )
            )
        if rig in disks:
            parts.append(
                _("disk {mount} {percent}").format(
                    mount=html.escape(disks[rig][0]), percent=_pct(disks[rig][1])
                )
            )
        result[rig] = " · ".join(parts)
    return result


def _no_data(chat: Chat, message: Message, wanted: str | None) -> None:
    if wanted:
        text = _("No data from Prometheus for rig {rig}. Is the exporter running and scraped?")
    else:
        text = _("No data from Prometheus. Is the exporter running and scraped?")
    chat.reply(message, text.format(rig=html.escape(wanted or "")))


def _per_rig(
    chat: Chat,
    message: Message,
    args: list[str],
    lines_of: Callable[[Chat, str | None], dict[str, Any]],
    text_of: Callable[[dict[str, Any]], str],
) -> None:
    """A command answering with lines per rig (for the rig named in args, or all): the text
    text_of makes of lines_of's rigs, or a note that Prometheus has none."""
    wanted = args[0] if args else None
    rigs = lines_of(chat, wanted)
    if not rigs:
        _no_data(chat, message, wanted)
        return
    chat.reply(message, text_of(rigs))


def _with_silent(
    lines_of: Callable[[Chat, str | None], dict[str, Any]], silent_line: Callable[[str], Any]
) -> Callable[[Chat, str | None], dict[str, Any]]:
    """lines_of for the rigs reporting now, and silent_line of each silent rig's note."""

    def lines(chat: Chat, wanted: str | None) -> dict[str, Any]:
        silent = silent_rigs(chat, wanted)
        merged = {
            **_live(lines_of(chat, wanted), silent),
            **{rig: silent_line(note) for rig, note in silent.items()},
        }
        return dict(sorted(merged.items()))

    return lines


def gpu(chat: Chat, message: Message, args: list[str]) -> None:
    _per_rig(
        chat,
        message,
        args,
        _with_silent(gpu_lines, lambda note: [note]),
        lambda cards: "\n\n".join(
            f"🖥 <b>{html.escape(rig)}</b>\n" + "\n".join(lines) for rig, lines in cards.items()
        ),
    )


def cpu(chat: Chat, message: Message, args: list[str]) -> None:
    _per_rig(
        chat,
        message,
        args,
        _with_silent(host_lines, lambda note: note),
        lambda hosts: "\n".join(
            f"🖥 <b>{html.escape(rig)}</b>: {line}" for rig, line in hosts.items()
        ),
    )


def _mutes(chat: Chat) -> dict[str, dict]:
    try:
        return rig_mutes(chat.alertmanager.silences(), chat.config.watchdog.alertname)
    except UpstreamError:
        return {}


def status(chat: Chat, message: Message, args: list[str]) -> None:
    wanted = args[0] if args else None
    silent = silent_rigs(chat, wanted)
    cards = _live(gpu_lines(chat, wanted), silent)
    hosts = _live(host_lines(chat, wanted), silent)
    try:
        alerts = firing_alerts(chat)
        alert_error = None
    except UpstreamError as exc:
        alerts, alert_error = [], chat.cannot_tell(exc)
    rigs = sorted({*cards, *hosts, *silent})
    if not rigs:
        _no_data(chat, message, wanted)
        return
    mutes = _mutes(chat) if not alert_error else {}
    energy_today = _energy_today(chat)
    blocks = []
    for rig in rigs:
        lines = [f"🖥 <b>{html.escape(rig)}</b>"]
        if rig in mutes:
            lines.append(mute.describe(chat, rig, mutes[rig]))
        if rig in silent:
            lines.append(silent[rig])
        if rig in hosts:
            lines.append(hosts[rig])
        lines += cards.get(rig, [])
        if rig in energy_today:
            lines.append(energy_today[rig])
        firing = [a for a in alerts if rig_of(a.labels) == rig]
        for alert in firing:
            labels = alert.labels
            marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
            card = " " + _("GPU {gpu}").format(gpu=labels["gpu"]) if labels.get("gpu") else ""
            line = f"{marker} {html.escape(labels.get('alertname', '?') + card)}"
            if alert.silenced_until:
                line += f" · {silenced_note(chat, alert)}"
            lines.append(line)
        if not firing and not alert_error:
            lines.append(_("✅ no firing alerts"))
        blocks.append("\n".join(lines))
    other = [a for a in alerts if rig_of(a.labels) not in rigs]
    if other and wanted is None:
        blocks.append(
            _("Other firing alerts: ")
            + html.escape(", ".join(sorted({a.alertname or "?" for a in other})))
        )
    if alert_error:
        blocks.append(alert_error)
    chat.reply(message, "\n\n".join(blocks))


def _energy_today(chat: Chat) -> dict[str, str]:
    """rig -> today's kWh and cost line; none when Prometheus cannot say (status goes on)."""
    try:
        return today_lines(chat)
    except UpstreamError:
        return {}
