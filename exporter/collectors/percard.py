"""The shape the per-card NVML collectors share: one unit of work per reachable card, and each
card's label sets rendered once per NVML initialisation."""

from __future__ import annotations

from functools import partial

from prometheus_client.metrics_core import Metric

from exporter.exposition import LabelSet
from exporter.families import FamilySpec, Sample
from exporter.nvml.device import Device, Gpu
from exporter.nvml.session import NVML_LANE, NvmlSession
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings

ExtraLabels = tuple[tuple[str, str], ...]


class CardLabels:
    """{"gpu": index, "uuid": uuid} plus extra labels, each combination built once: a scrape asks
    for ~45 per card. Valid for one Device (one initialisation, when the index can change).
    Never modify a label set it hands out."""

    __slots__ = ("device", "uuid", "base", "_sets")

    def __init__(self, uuid: str, device: Device) -> None:
        self.device = device
        self.uuid = uuid
        self.base = LabelSet(gpu=device.index, uuid=uuid)
        self._sets: dict[ExtraLabels, LabelSet] = {}

    def with_extra(self, extra: ExtraLabels) -> LabelSet:
        """The card's labels plus extra, given as a (name, value) tuple built beforehand."""
        labels = self._sets.get(extra)
        if labels is None:
            labels = self._sets[extra] = LabelSet(
                gpu=self.device.index, uuid=self.uuid, **dict(extra)
            )
        return labels


class CardLabelCache:
    """CardLabels per card, rebuilt when the card's Device is replaced by a re-initialisation."""

    def __init__(self) -> None:
        self._cards: dict[str, CardLabels] = {}

    def get(self, gpu: Gpu) -> CardLabels:
        device = gpu.device
        card = self._cards.get(gpu.uuid)
        if card is None or card.device is not device:
            card = self._cards[gpu.uuid] = CardLabels(gpu.uuid, device)
        return card


class PerCardCollector:
    """Runs read_card(gpu) for every card that is up, each through NvmlSession.read_card, so a
    lost or hung card costs only its own series."""

    name: str
    families: dict[str, FamilySpec]
    # The lane the units share; None gives every card a lane of its own (calls that sleep).
    lane: str | None = NVML_LANE

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        self.session = session
        self.labels = CardLabelCache()

    def read_card(self, gpu: Gpu) -> list[Sample]:
        raise NotImplementedError

    def cards(self) -> list[Gpu]:
        """The cards this scrape reads: those up."""
        return [gpu for gpu in self.session.gpus() if gpu.up]

    def plan(self) -> list[Unit]:
        session, read = self.session, self.read_card
        return [
            Unit(
                f"{self.name}/{gpu.uuid}",
                partial(session.read_card, gpu, read, gpu),
                self.lane or f"{self.name}/{gpu.uuid}",
            )
            for gpu in self.cards()
        ]

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(self.families, outcomes), True

    def close(self) -> None:
        pass
