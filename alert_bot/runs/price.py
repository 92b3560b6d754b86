"""The price per kWh in force now, on the bot's /metrics, so that Prometheus (which scrapes
the bot) and Grafana's energy dashboard price kWh with the bot's own setting."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from alert_bot.config import Config
from alert_bot.runs.energy import local

PRICE = "rigwatch_bot_energy_price_per_kwh"


class PriceCollector:
    """energy.price_per_kwh, or the tariff in force at this local minute; no sample when no
    price is configured."""

    def __init__(self, config: Config, clock: Callable[[], float]):
        self.config = config
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            PRICE, "Price of a kWh now (energy.price_per_kwh or tariffs).", labels=["currency"]
        )
        energy = self.config.energy
        if energy.priced:
            when = local(self.config, self.clock())
            family.add_metric([energy.currency], energy.price_at(when.hour * 60 + when.minute))
        yield family


def register_price(registry: CollectorRegistry, config: Config, clock: Callable[[], float]) -> None:
    registry.register(PriceCollector(config, clock))  # type: ignore[arg-type]
