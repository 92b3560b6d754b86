"""The NVML session's card registry: every card seen since the exporter started (by uuid, in
the order first seen), which of them the last initialisation found, and the indexes NVML
counts but cannot open, each with the bus id the PCI bus allows for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exporter.nvml.device import Gpu
from exporter.pci.bus import PciBus, attribute_unopened
from rigwatch.logs import logger

LOG = logger("exporter", "nvml")


@dataclass(frozen=True)
class Unopened:
    """An index NVML counts but cannot open, as of the last initialisation: why (NVML's error,
    e.g. "gpu_is_lost", "no_permission") and the bus id the PCI bus allows for it ("" if not)."""

    index: str
    reason: str
    pci_bus_id: str = ""


class CardRegistry:
    """Collectors hold the Gpu records: an initialisation updates them in place."""

    def __init__(self, sysfs: str | None = None) -> None:
        # Where to look up the bus ids of cards NVML cannot open (None: not looked up).
        self.sysfs = sysfs
        self._gpus: dict[str, Gpu] = {}
        self.unidentified = 0  # listed cards that could not be identified at the last init
        self.unopened: list[Unopened] = []  # replaced whole by each initialisation

    def gpus(self) -> list[Gpu]:
        return list(self._gpus.values())

    def any_lost(self) -> bool:
        """A card the last initialisation listed has turned lost since."""
        return any(g.present and not g.up for g in self._gpus.values())

    def card_missing(self) -> bool:
        """A card seen since start is absent from NVML's list, the listed ones all healthy."""
        return any(not g.present for g in self._gpus.values())

    def all_absent(self) -> None:
        """NVML is down: no card is present, none counted as unopened."""
        self.unopened = []
        for gpu in self._gpus.values():
            gpu.present = False

    def update(self, count: int, identify: Callable[[int, dict[int, str]], Gpu | None]) -> int:
        """The cards at indexes 0..count-1 as identify(index, failures) finds them merged into
        the registry; the rest marked absent; returns how many distinct cards were found."""
        seen: set[str] = set()
        self.unidentified = 0
        failures: dict[int, str] = {}
        for index in range(count):
            gpu = identify(index, failures)
            if gpu is None:
                # Listed but not answering (GPU_IS_LOST on its handle): when a known card is
                # missing, that is a lost card, retried on the short backoff.
                self.unidentified += 1
                continue
            if gpu.uuid in seen:
                continue
            seen.add(gpu.uuid)
            known = self._gpus.get(gpu.uuid)
            if known is None:
                self._gpus[gpu.uuid] = gpu
            else:
                # The new initialisation's view replaces the old one whole, and the card's
                # identity series stay the same.
                known.device = gpu.device
                known.present = True
                known.lost = gpu.lost
        for uuid, gpu in self._gpus.items():
            if uuid not in seen:
                if gpu.present:
                    LOG.warning("GPU %s (%s) is no longer visible to NVML", gpu.device.index, uuid)
                gpu.present = False
        self.unopened = self._locate(failures, seen)
        return len(seen)

    def _locate(self, failures: dict[int, str], seen: set[str]) -> list[Unopened]:
        """The cards NVML counts but cannot open, each with the bus id the PCI bus allows."""
        if not failures:
            return []
        bus_ids: dict[int, str] = {}
        if self.sysfs is not None:
            bus = PciBus(self.sysfs)
            opened = {
                int(g.device.index): g.device.pci_bus_id
                for uuid, g in self._gpus.items()
                if uuid in seen and g.device.pci_bus_id
            }
            claimed = set(opened.values())
            candidates = [
                f.bus_id
                for f in bus.gpus()
                if f.bus_id not in claimed and bus.driver(f) == "nvidia"
            ]
            bus_ids = attribute_unopened(list(failures), opened, candidates)
        return [
            Unopened(str(index), reason, bus_ids.get(index, ""))
            for index, reason in sorted(failures.items())
        ]
