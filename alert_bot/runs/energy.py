"""GPU energy and its cost over a time window (NVML's energy counter where a card has one, its
power readings integrated where not), split where the tariff changes; plus local-time helpers
for everything a person reads (the store keeps UTC)."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass

from alert_bot.config import Config, EnergySettings
from alert_bot.i18n import _, format_duration, format_money, format_number, format_time
from alert_bot.upstream import PrometheusClient

ENERGY_SERIES = "gpu:rigwatch_energy_watts:rate1m"
COUNTER = "rigwatch_gpu_energy_joules_total"
JOULES_PER_KWH = 3.6e6


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


@dataclass
class CardEnergy:
    rig: str
    gpu: str
    uuid: str
    joules: float = 0.0
    cost: float = 0.0
    estimated: bool = False

    @property
    def kwh(self) -> float:
        return self.joules / JOULES_PER_KWH


def card_energy(
    prometheus: PrometheusClient, config: Config, selector: str, start: float, end: float
) -> dict[tuple[str, str], CardEnergy]:
    """(instance, uuid) -> energy and cost of each card the selector picks over [start, end],
    at the wall (the cards' figure × energy.wall_factor). A card with NVML's energy counter
    counts its increase (exact across gaps in the data); a card without one counts its power
    readings' average over the piece × its length (estimated)."""
    cards: dict[tuple[str, str], CardEnergy] = {}
    factor = config.energy.wall_factor
    for a, b, price in segments(config, start, end):
        millis = int((b - a) * 1000)
        if millis < 1000:
            continue
        estimated_selector = ",".join(p for p in (selector, 'estimated="true"') if p)
        counted = prometheus.query(f"increase({COUNTER}{{{selector}}}[{millis}ms])", at=b)
        integrated = prometheus.query(
            f"avg_over_time({ENERGY_SERIES}{{{estimated_selector}}}[{millis}ms])"
            f" * {millis / 1000:g}",
            at=b,
        )
        for row, estimated in [(r, False) for r in counted] + [(r, True) for r in integrated]:
            metric = row["metric"]
            key = (metric.get("instance", ""), metric.get("uuid", ""))
            card = cards.get(key)
            if card is None:
                card = cards[key] = CardEnergy(
                    metric.get("rig") or metric.get("instance", "?"),
                    metric.get("gpu", ""),
                    metric.get("uuid", ""),
                )
            joules = row["value"] * factor
            card.joules += joules
            card.cost += joules / JOULES_PER_KWH * price
            card.estimated = card.estimated or estimated
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
