"""/runs and /energy, today's energy line in /status, and the daily digest's text: the run
watch and energy figures as people read them (local time, kWh, cost)."""

from __future__ import annotations

import html

from alert_bot.chat.context import Chat
from alert_bot.i18n import (
    DurationError,
    _,
    format_number,
    format_window,
    looks_like_duration,
    ngettext,
    parse_typed_duration,
)
from alert_bot.runs.energy import (
    DAY,
    card_energy,
    duration_text,
    host_share,
    kwh_text,
    local_text,
    rig_energy,
    start_of_day,
    total_text,
)
from alert_bot.runs.messages import cards_text
from alert_bot.runs.table import Run, RunTable
from alert_bot.telegram.types import Message
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import quote
from alert_bot.upstream.units import GIB

# The windows /energy answers for: an hour (a test run) up to 30 days (a bill).
SHORTEST_WINDOW, LONGEST_WINDOW = 3600.0, 30 * DAY


def _wanted(rig: str, wanted: str | None) -> bool:
    return wanted is None or rig == wanted or rig.split(":")[0] == wanted


def _scope(chat: Chat, message: Message) -> tuple[frozenset[str], bool]:
    """(the users whose own chat this is, whether it may see every run): a person's chat
    that is not also an allowed owner chat sees only its own runs."""
    chat_id = message.chat_id
    mine = chat.config.runs.users_of(chat_id)
    return mine, chat.access.may_use(chat_id, message.sender.id)


def _visible(runs: list[Run], mine: frozenset[str], everyone: bool) -> list[Run]:
    """The runs this chat may see, its own first (a stable sort keeps the table's order)."""
    shown = [r for r in runs if everyone or r.user in mine]
    return sorted(shown, key=lambda r: r.user not in mine)


def runs(chat: Chat, message: Message, args: list[str]) -> None:
    """Running runs with elapsed time, cards, memory, utilisation and energy so far; and the
    runs that ended in the last 24 h. In a person's chat, their runs first (or only theirs)."""
    wanted = args[0] if args else None
    now = chat.clock()
    table = RunTable(chat.store)
    mine, everyone = _scope(chat, message)
    running = _visible([r for r in table.running() if _wanted(r.rig, wanted)], mine, everyone)
    ended = _visible(
        [r for r in table.ended_since(now - DAY) if _wanted(r.rig, wanted)], mine, everyone
    )
    try:
        lines = _running_lines(chat, running, now)
    except UpstreamError as exc:
        # Without Prometheus the watch cannot see runs start or end: never "nothing runs".
        lines = [chat.cannot_tell(exc)]
    lines.append("")
    ended_lines(chat, ended, now, lines)
    chat.reply(message, "\n".join(lines).strip())


def _running_lines(chat: Chat, running: list, now: float) -> list[str]:
    """The running section; UpstreamError when Prometheus cannot say (even when the store
    knows no running run, since the watch cannot see one start without it)."""
    if not running:
        chat.prometheus.query("time()")  # reachable: only then is "no run" known
        return [_("🏃 No run is running.")]
    lines = [_("🏃 <b>Running</b>")]
    memory = {
        (r["metric"].get("instance", ""), r["metric"].get("pid", "")): r["value"]
        for r in chat.prometheus.query("sum by (instance, pid) (rigwatch_gpu_process_memory_bytes)")
    }
    util = {
        (r["metric"].get("instance", ""), r["metric"].get("uuid", "")): r["value"]
        for r in chat.prometheus.query("rigwatch_gpu_utilization_ratio")
    }
    for run in running:
        parts = [
            f"🖥 {html.escape(run.rig)} · <code>{html.escape(run.run_name)}</code>"
            f" (pid {run.pid}{', ' + html.escape(run.user) if run.user else ''})",
            html.escape(cards_text(run)),
            f"{duration_text(now - run.start_time)}",
        ]
        used = memory.get((run.instance, str(run.pid)))
        if used is not None:
            parts.append(_("mem {size} GiB").format(size=format_number(used / GIB)))
        busy = [util[(run.instance, u)] for u in run.cards if (run.instance, u) in util]
        if busy:
            parts.append(_("util {percent}").format(percent=f"{sum(busy) / len(busy) * 100:.0f}%"))
        selector = f'instance="{quote(run.instance)}",uuid=~"{"|".join(run.cards)}"'
        energy = list(
            card_energy(chat.prometheus, chat.config, selector, run.start_time, now).values()
        )
        if energy:
            parts.append(total_text(chat.config, energy))
        lines.append(" · ".join(parts))
    return lines


def ended_lines(chat: Chat, ended: list, now: float, lines: list[str]) -> None:
    """The runs that ended in the last 24 h (from the store: known even without Prometheus)."""
    if ended:
        lines.append(_("🏁 <b>Ended in the last 24 h</b>"))
        for run in ended:
            summary = run.summary or {}
            text = (
                f"🖥 {html.escape(run.rig)} · <code>{html.escape(run.run_name)}</code>"
                f" (pid {run.pid}) · {html.escape(cards_text(run))} · "
                + _("ended {time} after {duration}").format(
                    time=local_text(chat.config, run.ended_at or now),
                    duration=duration_text((run.ended_at or now) - run.start_time),
                )
            )
            if summary.get("kwh") is not None:
                text += " · " + kwh_text(
                    chat.config, summary["kwh"], summary.get("cost", 0.0), summary["estimated"]
                )
            lines.append(text)
    else:
        lines.append(_("🏁 No run ended in the last 24 h."))


def personal_energy(chat: Chat, message: Message, mine: frozenset[str], window: float) -> None:
    """The energy and cost of this person's runs over the period: each ended run's figures as
    summed at its end, and the running ones' so far from Prometheus. A card shared with
    another run counts whole (the summaries say so)."""
    now = chat.clock()
    start = now - window
    table = RunTable(chat.store)
    kwh = cost = 0.0
    estimated = False
    count = 0
    for run in table.ended_since(start):
        summary = run.summary or {}
        if run.user in mine and summary.get("kwh") is not None:
            kwh += summary["kwh"]
            cost += summary.get("cost", 0.0)
            estimated |= bool(summary.get("estimated"))
            count += 1
    for run in table.running():
        if run.user not in mine:
            continue
        selector = f'instance="{quote(run.instance)}",uuid=~"{"|".join(run.cards)}"'
        cards = list(
            card_energy(
                chat.prometheus, chat.config, selector, max(start, run.start_time), now
            ).values()
        )
        kwh += sum(c.kwh for c in cards)
        cost += sum(c.cost for c in cards)
        estimated |= any(c.estimated for c in cards)
        count += 1
    who = ", ".join(sorted(mine))
    head = _("⚡ <b>Your runs ({user}), last {period}</b>").format(
        user=html.escape(who), period=format_window(window)
    )
    if not count:
        chat.reply(message, head + "\n" + _("No run of yours in this period."))
        return
    runs_text = ngettext("{count} run", "{count} runs", count).format(count=count)
    chat.reply(message, f"{head}\n{runs_text}: " + kwh_text(chat.config, kwh, cost, estimated))


def energy(chat: Chat, message: Message, args: list[str]) -> None:
    """/energy [rig] [window]: kWh and cost per rig and per card over the last day, or the
    window typed (7d, 30d, 12h, 7д...)."""
    wanted, window = None, DAY
    for arg in args:
        if looks_like_duration(arg):
            try:
                window = parse_typed_duration(arg)
            except DurationError as exc:
                chat.reply(message, html.escape(str(exc)))
                return
            if not SHORTEST_WINDOW <= window <= LONGEST_WINDOW:
                chat.reply(
                    message,
                    _("An energy window lasts from {shortest} to {longest}.").format(
                        shortest=format_window(SHORTEST_WINDOW),
                        longest=format_window(LONGEST_WINDOW),
                    ),
                )
                return
        else:
            wanted = arg
    now = chat.clock()
    mine, everyone = _scope(chat, message)
    if mine:
        personal_energy(chat, message, mine, window)
        if not everyone:
            return
    by_rig = {
        rig: cards
        for rig, cards in rig_energy(chat.prometheus, chat.config, now - window, now).items()
        if _wanted(rig, wanted)
    }
    if not by_rig:
        if wanted:
            text = _("No energy data from Prometheus for rig {rig}.")
        else:
            text = _("No energy data from Prometheus.")
        chat.reply(message, text.format(rig=html.escape(wanted or "")))
        return
    config = chat.config
    lines = [
        _("⚡ <b>GPU energy, last {period}</b> (to {time})").format(
            period=format_window(window), time=local_text(config, now)
        )
    ]
    for rig in sorted(by_rig):
        cards = sorted(by_rig[rig], key=lambda c: (len(c.gpu), c.gpu))
        kwh = sum(c.kwh for c in cards)
        cost = sum(c.cost for c in cards)
        host_kwh, host_cost = host_share(config, cards)
        line = f"🖥 <b>{html.escape(rig)}</b>: " + kwh_text(
            config, kwh + host_kwh, cost + host_cost, any(c.estimated for c in cards)
        )
        if host_kwh:
            line += _(" (host {watts} W included)").format(
                watts=format_number(config.energy.host_watts, "g")
            )
        lines.append(line)
        for card in cards:
            lines.append(
                "  "
                + _("GPU {gpu}").format(gpu=html.escape(card.gpu))
                + ": "
                + kwh_text(config, card.kwh, card.cost, card.estimated)
            )
    if config.energy.wall_factor != 1.0:
        lines.append(
            _("At the wall: the cards' figures × {factor}.").format(
                factor=format_number(config.energy.wall_factor, "g")
            )
        )
    chat.reply(message, "\n".join(lines))


def today_lines(chat: Chat) -> dict[str, str]:
    """rig -> "⚡ today 3.2 kWh ≈ €0.96" for /status."""
    now = chat.clock()
    start = start_of_day(chat.config, now)
    out = {}
    for rig, cards in rig_energy(chat.prometheus, chat.config, start, now).items():
        host_kwh, host_cost = host_share(chat.config, cards)
        out[rig] = _("⚡ today ") + kwh_text(
            chat.config,
            sum(c.kwh for c in cards) + host_kwh,
            sum(c.cost for c in cards) + host_cost,
            any(c.estimated for c in cards),
        )
    return out


__all__ = ["energy", "runs", "today_lines"]
