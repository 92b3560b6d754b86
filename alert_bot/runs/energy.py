"""GPU energy and its cost over a time window (NVML's energy counter where a card has one, its
power readings integrated where not), split where the tariff changes; plus local-time helpers
for everything a person reads (the store keeps UTC)."""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from dataclasses import dataclass

from alert_bot.config import Config, EnergySettings
from alert_bot.i18n import _, format_duration, format_money, format_number, format_time
from alert_bot.upstream.prometheus import PrometheusClient

ENERGY_SERIES = "gpu:rigwatch_energy_watts:rate1m"
COUNTER = "rigwatch_gpu_energy_joules_total"
JOULES_PER_KWH = 3.6e6
DAY = 86400.0  # seconds


def zone(config: Config) -> dt.tzinfo:
    """The rig owner's time zone (the machine's when none is configured)."""
    return config.zone


def local(config: Config, moment: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, zone(config))


def local_text(config: Config, moment: float, with_date: bool = True) -> str:
    return format_time(moment, zone(config), with_date)


def start_of_day(config: Config, moment: float) -> float:
    """Local midnight before a moment, as UTC seconds."""
    when = local(config, moment)
    return when.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def duration_text(seconds: float) -> str:
    """A run's length to the minute ("1d 2h 3m", "12m 0s")."""
    return format_duration(seconds, precise=True)


def segments(config: Config, start: float, end: float) -> list[tuple[float, float, float]]:
    """(from, to, price per kWh) pieces of a window, cut where the local tariff changes."""
    energy = config.energy
    if not energy.tariffs:
        return [(start, end, energy.price_per_kwh or 0.0)] if end > start else []
    tz = zone(config)
    cuts = set()
    day = local(config, start).date()
    while dt.datetime.combine(day, dt.time(), tz).timestamp() < end:
        for tariff in energy.tariffs:
            hour, minute = divmod(tariff.start_minute, 60)
            moment = dt.datetime.combine(day, dt.time(hour, minute), tz).timestamp()
            if start < moment < end:
                cuts.add(moment)
        day += dt.timedelta(days=1)
    edges = [start, *sorted(cuts), end]
    out = []
    for a, b in zip(edges, edges[1:], strict=False):
        when = local(config, a)
        out.append((a, b, energy.price_at(when.hour * 60 + when.minute)))
    return out


# How a card without an energy counter is integrated: the recorded power series is sampled
# every STEP-th second of the window (sample-and-hold: each step takes the newest sample before
# it) and the samples summed × the step. A step with no sample newer than FRESH adds nothing,
# so time before a card's first sample, a rig switched off (its scrape fails: Prometheus marks
# the series stale at once) and a gap in the data (a Prometheus outage, a push that stopped)
# count nothing; FRESH bridges a missed evaluation or two (the shipped interval is 15 s).
# The step scales with the window (an edge where a card starts or stops is off by at most one
# step): one second up to a day, 7 s over a week, 30 s over 30 days (86 400 steps at most).
STEP_SHARE = 86400
STEP_MIN_S = 1
STEP_MAX_S = 60
FRESH = "1m"


def integration_step(seconds: float) -> int:
    """The sampling step (whole seconds) for integrating power over a window of seconds."""
    return int(min(STEP_MAX_S, max(STEP_MIN_S, seconds // STEP_SHARE)))


def fresh(series: str) -> str:
    """A series only where its newest sample is under FRESH old (an instant selector alone
    would reach back five minutes across a gap that has no stale marker)."""
    return f"({series} and (timestamp({series}) > time() - {FRESH[:-1]} * 60))"


def integral_query(series: str, start: float, end: float, over: str = "sum_over_time") -> str:
    """PromQL, to evaluate at end, for series' integral over [start, end] in unit·seconds;
    with over="count_over_time", the seconds in it that have data."""
    step = integration_step(end - start)
    millis = int((end - start) * 1000)
    return f"{over}({fresh(series)}[{millis}ms:{step}s]) * {step}"


@dataclass
class CardEnergy:
    rig: str
    gpu: str
    uuid: str
    joules: float = 0.0
    cost: float = 0.0
    estimated: bool = False
    # Seconds with data (the card's energy series present and fresh), and the same seconds
    # weighted by the tariff of their piece: what a fixed host share is charged over (asked
    # only when energy.host_watts is set).
    seconds: float = 0.0
    priced_seconds: float = 0.0

    @property
    def kwh(self) -> float:
        return self.joules / JOULES_PER_KWH


def _card(cards: dict[tuple[str, str], CardEnergy], metric: dict[str, str]) -> CardEnergy:
    key = (metric.get("instance", ""), metric.get("uuid", ""))
    card = cards.get(key)
    if card is None:
        card = cards[key] = CardEnergy(
            metric.get("rig") or metric.get("instance", "?"),
            metric.get("gpu", ""),
            metric.get("uuid", ""),
        )
    return card


def card_energy(
    prometheus: PrometheusClient, config: Config, selector: str, start: float, end: float
) -> dict[tuple[str, str], CardEnergy]:
    """(instance, uuid) -> energy and cost of each card the selector picks over [start, end],
    at the wall (the cards' figure × energy.wall_factor). A card with NVML's energy counter
    counts its increase (measured, exact across gaps in the data); a card without one
    integrates its power readings over the time they exist (estimated; see STEP_SHARE)."""
    cards: dict[tuple[str, str], CardEnergy] = {}
    factor = config.energy.wall_factor
    for a, b, price in segments(config, start, end):
        millis = int((b - a) * 1000)
        if millis < 1000:
            continue
        estimated_selector = ",".join(p for p in (selector, 'estimated="true"') if p)
        counted = prometheus.query(f"increase({COUNTER}{{{selector}}}[{millis}ms])", at=b)
        integrated = prometheus.query(
            integral_query(f"{ENERGY_SERIES}{{{estimated_selector}}}", a, b), at=b
        )
        for row, estimated in [(r, False) for r in counted] + [(r, True) for r in integrated]:
            card = _card(cards, row["metric"])
            joules = row["value"] * factor
            card.joules += joules
            card.cost += joules / JOULES_PER_KWH * price
            card.estimated = card.estimated or estimated
        if not config.energy.host_watts:
            continue  # the time with data is for the host share only: not asked without one
        covered = integral_query(f"{ENERGY_SERIES}{{{selector}}}", a, b, "count_over_time")
        for row in prometheus.query(covered, at=b):
            card = _card(cards, row["metric"])
            card.seconds += row["value"]
            card.priced_seconds += row["value"] * price
    return cards


def money(energy: EnergySettings, amount: float) -> str:
    """ "€0.96" in English, "0,96 ₽" in Russian; the currency HTML-escaped (every caller sends
    HTML)."""
    return format_money(amount, html.escape(energy.currency))


def kwh_text(config: Config, kwh: float, cost: float, estimated: bool) -> str:
    """ "11.8 kWh ≈ €3.54", marked when any of it was integrated from power readings."""
    number = format_number(kwh, ".3g" if kwh < 10 else ".1f")
    text = _("{number} kWh").format(number=number)
    if config.energy.priced:
        text += f" ≈ {money(config.energy, cost)}"
    if estimated:
        text += _(" (estimated from power readings)")
    return text


def total_text(config: Config, cards: list[CardEnergy]) -> str:
    return kwh_text(
        config,
        sum(c.kwh for c in cards),
        sum(c.cost for c in cards),
        any(c.estimated for c in cards),
    )


def rig_energy(
    prometheus: PrometheusClient, config: Config, start: float, end: float
) -> dict[str, list[CardEnergy]]:
    """rig -> its cards' energy over the window."""
    by_rig: dict[str, list[CardEnergy]] = defaultdict(list)
    for card in card_energy(prometheus, config, "", start, end).values():
        by_rig[card.rig].append(card)
    return by_rig


def host_share(config: Config, cards: list[CardEnergy]) -> tuple[float, float]:
    """(kWh, cost) of the configured fixed host share (energy.host_watts) over the time the
    rig reported (its card with the most time with data; a rig switched off draws nothing
    here), priced by the tariff of each piece of the window."""
    if not cards or not config.energy.host_watts:
        return 0.0, 0.0
    longest = max(cards, key=lambda c: c.seconds)
    watts = config.energy.host_watts
    return watts * longest.seconds / JOULES_PER_KWH, watts * longest.priced_seconds / JOULES_PER_KWH
