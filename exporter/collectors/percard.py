"""The shape the per-card NVML collectors share: one unit of work per reachable card."""

from __future__ import annotations

from functools import partial

from prometheus_client.metrics_core import Metric

from exporter.families import FamilySpec, Sample
from exporter.nvml import NVML_LANE, Gpu, NvmlSession
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings


class PerCardCollector:
    """Runs read_card(gpu) for every card that is up, each through NvmlSession.read_card, so a
    lost or hung card costs only its own series."""

    name: str
    families: dict[str, FamilySpec]
    # The lane the units share; None gives every card a lane of its own (calls that sleep).
    lane: str | None = NVML_LANE

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        self.session = session

    def read_card(self, gpu: Gpu) -> list[Sample]:
        raise NotImplementedError

    def plan(self) -> list[Unit]:
        session, read = self.session, self.read_card
        return [
            Unit(
                f"{self.name}/{gpu.uuid}",
                partial(session.read_card, gpu, read, gpu),
                self.lane or f"{self.name}/{gpu.uuid}",
            )
            for gpu in session.gpus()
            if gpu.up
        ]

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(self.families, outcomes), True

    def close(self) -> None:
        pass
