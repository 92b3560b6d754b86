"""The weekly card-health report and /health: per rig, the cards whose cooling, fans,
throttling, PCIe link or memory drifted, by how much against what, and what to do.

The figures come from Prometheus: the hourly recording rules of prometheus/rules/wear.yml
(a card's temperature and fan duty under load, its throttled share of busy time, the share of
its busy time its PCIe link ran below its best) averaged over this week
and over the week four weeks before, and the error and memory counters over this week against
the four weeks before it. The report's thresholds are lower than the wear alerts' (which fire
only where a drift is steep enough to act on now), so the owner hears of a drift a few weeks
before it would alert. A card needs a day's worth of hours in both weeks to be compared: a
replaced card (a new uuid) or a rig that was off for weeks says nothing until it has a past.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from alert_bot.config import Config
from alert_bot.i18n import _, format_number, ngettext
from alert_bot.runs.energy import local_text
from alert_bot.store import NewNotification
from alert_bot.upstream.prometheus import PrometheusClient

WEEK = "7d"
LOADED = "gpu:rigwatch_loaded_temperature_celsius:avg1h"
THROTTLED = "gpu:rigwatch_throttled_share:avg1h"
FANS = "gpu:rigwatch_loaded_fan_speed_ratio:avg1h"
LINK = "gpu:rigwatch_pcie_link_degraded_share:avg1h"
CARD = ("job", "instance", "rig", "gpu", "uuid")
MIN_HOURS = 24  # hourly points a week needs before its mean is compared (as the alerts do)
# Report thresholds, each below its alert's (GpuCoolingDegrading 5 °C, GpuThrottlingRising
# 10 points and 20 %, PcieErrorsRising 100 and twice the week before).
COOLING_RISE_C = 3.0
THROTTLE_RISE = 0.05
THROTTLE_FLOOR = 0.10
ERRORS_FLOOR = 50.0
ERRORS_FACTOR = 2.0
# Fans: the duty asked at the same power up 10 points (no alert: the temperature still holds).
FAN_RISE = 0.10
# A link below its best width or generation for 2 % of the busy time or more, at least twice
# as often as four weeks ago (the alerts catch a link that stays down for 10 minutes).
LINK_FLOOR = 0.02
LINK_FACTOR = 2.0


@dataclass
class Finding:
    """One drift of one card: this week's figure against its basis."""

    kind: str  # cooling, fans, throttling, link, pcie, aer, memory
    this: float
    before: float


@dataclass
class Card:
    rig: str
    job: str
    instance: str
    gpu: str
    uuid: str
    name: str = ""
    pci_bus_id: str = ""
    findings: list[Finding] = field(default_factory=list)


@dataclass
class RigHealth:
    rig: str
    job: str
    instance: str
    cards: dict[str, Card] = field(default_factory=dict)  # uuid (or PCI address) -> card
    compared: set[str] = field(default_factory=set)  # uuids with both weeks to compare

    def drifting(self) -> list[Card]:
        return sorted(
            (c for c in self.cards.values() if c.findings),
            key=lambda c: (len(c.gpu), c.gpu, c.pci_bus_id),
        )


def _wanted(name: str, wanted: str) -> bool:
    return name == wanted or name.split(":")[0] == wanted


def _key(metric: dict) -> tuple[str, str]:
    return metric.get("instance", ""), metric.get("uuid", "")


def _with_hours(expr: str, offset: str = "") -> str:
    """A recorded series' weekly mean, only where the week holds at least MIN_HOURS points."""
    window = f"[{WEEK}]{' offset ' + offset if offset else ''}"
    return f"avg_over_time({expr}{window}) and count_over_time({expr}{window}) >= {MIN_HOURS}"


def _bus(address: str) -> str:
    """A PCI address without its domain ("01:00.0"): NVML writes 8 domain digits, sysfs 4."""
    return address.lower()[-7:]


def survey(
    prometheus: PrometheusClient, now: float, rig: str | None = None
) -> dict[str, RigHealth]:
    """Every rig Prometheus saw cards of this week, with each card's drifts (UpstreamError when
    Prometheus cannot answer: the caller says it cannot tell, never "all well")."""

    def query(expr: str) -> list[dict]:
        return [
            r
            for r in prometheus.query(expr, at=now)
            if rig is None
            or _wanted(r["metric"].get("rig") or r["metric"].get("instance", ""), rig)
        ]

    rigs: dict[str, RigHealth] = {}
    cards: dict[tuple[str, str], Card] = {}
    by_bus: dict[tuple[str, str], Card] = {}
    for row in query(f"last_over_time(rigwatch_gpu_info[{WEEK}])"):
        m = row["metric"]
        name = m.get("rig") or m.get("instance", "?")
        health = rigs.setdefault(name, RigHealth(name, m.get("job", ""), m.get("instance", "")))
        card = Card(
            name,
            m.get("job", ""),
            m.get("instance", ""),
            m.get("gpu", ""),
            m.get("uuid", ""),
            m.get("name", ""),
            m.get("pci_bus_id", ""),
        )
        health.cards[card.uuid] = cards[_key(m)] = card
        if card.pci_bus_id:
            by_bus[(card.instance, _bus(card.pci_bus_id))] = card

    def pairs(this_expr: str, before_expr: str) -> list[tuple[Card, float, float]]:
        before = {_key(r["metric"]): r["value"] for r in query(before_expr)}
        out = []
        for row in query(this_expr):
            key = _key(row["metric"])
            if key in cards and key in before:
                out.append((cards[key], row["value"], before[key]))
        return out

    for card, this, before in pairs(_with_hours(LOADED), _with_hours(LOADED, "28d")):
        rigs[card.rig].compared.add(card.uuid)
        if this - before >= COOLING_RISE_C:
            card.findings.append(Finding("cooling", this, before))
    for card, this, before in pairs(_with_hours(FANS), _with_hours(FANS, "28d")):
        rigs[card.rig].compared.add(card.uuid)
        if this - before >= FAN_RISE:
            card.findings.append(Finding("fans", this, before))
    for card, this, before in pairs(_with_hours(THROTTLED), _with_hours(THROTTLED, "28d")):
        rigs[card.rig].compared.add(card.uuid)
        if this >= THROTTLE_FLOOR and this - before >= THROTTLE_RISE:
            card.findings.append(Finding("throttling", this, before))
    for card, this, before in pairs(_with_hours(LINK), _with_hours(LINK, "28d")):
        rigs[card.rig].compared.add(card.uuid)
        if this >= LINK_FLOOR and this >= LINK_FACTOR * before:
            card.findings.append(Finding("link", this, before))
    # Errors and memory: this week against a week's average over the four weeks before it.
    replay = "rigwatch_gpu_pcie_replay_errors_total"
    for card, this, before in pairs(
        f"increase({replay}[{WEEK}])", f"increase({replay}[28d] offset {WEEK}) / 4"
    ):
        if this >= ERRORS_FLOOR and this >= ERRORS_FACTOR * before:
            card.findings.append(Finding("pcie", this, before))
    memory = (
        "sum by (job, instance, rig, gpu, uuid) (increase(rigwatch_gpu_remapped_rows[{w}]{o}))"
        " or sum by (job, instance, rig, gpu, uuid) (increase(rigwatch_gpu_retired_pages[{w}]{o}))"
    )
    before_memory = {
        _key(r["metric"]): r["value"] for r in query(memory.format(w="28d", o=f" offset {WEEK}"))
    }
    for row in query(memory.format(w=WEEK, o="")):
        card = cards.get(_key(row["metric"]))
        if card is not None and round(row["value"]) >= 1:
            card.findings.append(
                Finding("memory", row["value"], before_memory.get(_key(row["metric"]), 0.0))
            )
    _aer(query, rigs, by_bus)
    return rigs


def _aer(query, rigs: dict[str, RigHealth], by_bus: dict[tuple[str, str], Card]) -> None:
    """Correctable AER events per PCI address, this week against the four weeks before; a
    card by its address when the exporter's GPU info names it, else the address alone."""
    expr = (
        "sum by (job, instance, rig, pci_bus_id) (increase("
        'rigwatch_pci_aer_events_total{{severity="correctable"}}[{w}]{o}))'
    )
    before = {
        (r["metric"].get("instance", ""), _bus(r["metric"].get("pci_bus_id", ""))): r["value"]
        for r in query(expr.format(w="28d", o=f" offset {WEEK}") + " / 4")
    }
    for row in query(expr.format(w=WEEK, o="")):
        m = row["metric"]
        key = (m.get("instance", ""), _bus(m.get("pci_bus_id", "")))
        if key not in before:
            continue
        this = row["value"]
        if this < ERRORS_FLOOR or this < ERRORS_FACTOR * before[key]:
            continue
        card = by_bus.get(key)
        if card is None:
            name = m.get("rig") or m.get("instance", "?")
            health = rigs.setdefault(name, RigHealth(name, m.get("job", ""), key[0]))
            card = health.cards.setdefault(
                m.get("pci_bus_id", ""),
                Card(name, m.get("job", ""), key[0], "", "", pci_bus_id=m.get("pci_bus_id", "")),
            )
        card.findings.append(Finding("aer", this, before[key]))


def _card_title(card: Card) -> str:
    if not card.gpu:
        return _("<b>The card at {address}</b>").format(address=html.escape(card.pci_bus_id))
    parts = [_("<b>GPU {gpu}</b>").format(gpu=html.escape(card.gpu))]
    if card.name:
        parts.append(html.escape(card.name))
    if card.uuid:
        parts.append(f"<code>{html.escape(card.uuid[:12])}</code>")
    return " · ".join(parts)


def _percent(ratio: float) -> str:
    return format_number(100 * ratio, ".0f") + " %"


def _finding_lines(finding: Finding) -> list[str]:
    """What drifted with its basis, and what to do."""
    this, before = finding.this, finding.before
    if finding.kind == "cooling":
        what = _(
            "🌡 {rise} °C hotter under load: {this} °C this week, {before} °C four weeks ago "
            "(hourly means at {band} of its power limit or more)"
        ).format(
            band=_percent(0.6),
            rise=format_number(this - before),
            this=format_number(this, ".0f"),
            before=format_number(before, ".0f"),
        )
        todo = _("Clean the heatsink and fans of dust; renew the thermal paste if it is old.")
    elif finding.kind == "fans":
        what = _(
            "🌀 its fans asked for {this} at the same power this week, {before} four weeks ago "
            "(hourly means at {band} of its power limit or more)"
        ).format(band=_percent(0.6), this=_percent(this), before=_percent(before))
        todo = _(
            "The fans work harder for the same heat: clean the heatsink and fans of dust and "
            "check each fan spins freely."
        )
    elif finding.kind == "link":
        what = _(
            "🔌 its PCIe link ran below its best width or speed {this} of its busy time this "
            "week, {before} four weeks ago"
        ).format(this=_percent(this), before=_percent(before))
        todo = _("Reseat or replace the riser and its cable at the next stop.")
    elif finding.kind == "throttling":
        what = _(
            "🐢 slowed by heat or power {this} of its busy time this week, {before} four weeks ago"
        ).format(this=_percent(this), before=_percent(before))
        todo = _("Check the fans, the airflow in the case, the room and the power cables.")
    elif finding.kind in ("pcie", "aer"):
        counter = _("PCIe replay") if finding.kind == "pcie" else _("AER correctable")
        what = _(
            "🔌 {this} {counter} errors this week, {before} a week on average over the four "
            "weeks before"
        ).format(
            this=format_number(this, ".0f"), counter=counter, before=format_number(before, ".0f")
        )
        todo = _("Reseat or replace the riser and its cable at the next stop.")
    else:
        what = _(
            "🧩 {this} memory rows or pages taken out of use this week, {before} in the four "
            "weeks before"
        ).format(this=format_number(this, ".0f"), before=format_number(before, ".0f"))
        todo = _("The memory is failing: plan to replace the card.")
    return [what, "→ " + todo]


def report_text(config: Config, health: RigHealth, now: float, all_well: bool) -> str | None:
    """The rig's message: its drifting cards, or (all_well) a line that none drifted; None
    when there is nothing to say."""
    title = _("🩺 <b>Card health · {rig}</b> · {time}").format(
        rig=html.escape(health.rig), time=local_text(config, now)
    )
    drifting = health.drifting()
    if drifting:
        lines = [title]
        for card in drifting:
            lines.append("")
            lines.append(_card_title(card))
            advised: set[str] = set()  # one card's two riser findings: the advice once
            for finding in card.findings:
                what, todo = _finding_lines(finding)
                lines.append(what)
                if todo not in advised:
                    lines.append(todo)
                    advised.add(todo)
        return "\n".join(lines)
    if not all_well:
        return None
    compared = len(health.compared)
    if not compared:
        return (
            title
            + "\n"
            + _(
                "Not enough history to compare yet: a card needs a day under load this week and "
                "four weeks ago."
            )
        )
    return (
        title
        + "\n"
        + ngettext(
            "✅ {count} card compared with four weeks ago: nothing drifted.",
            "✅ {count} cards compared with four weeks ago: nothing drifted.",
            compared,
        ).format(count=compared)
    )


def weekly_notices(
    prometheus: PrometheusClient, config: Config, now: float
) -> list[NewNotification]:
    """The weekly report's messages: one per rig with a drift (or every rig, with
    health.all_well), to the chats the routes give for the rig's labels."""
    notices = []
    for name, health in sorted(survey(prometheus, now).items()):
        text = report_text(config, health, now, config.health.all_well)
        if text is None:
            continue
        labels = {"rig": name, "job": health.job, "instance": health.instance}
        notices.extend(
            NewNotification(chat_id, thread_id, "notice", {"html": text})
            for chat_id, thread_id in config.targets(labels)
        )
    return notices


__all__ = ["RigHealth", "report_text", "survey", "weekly_notices"]
