"""The collector registry: names (as in --[no-]collector.NAME) mapped to their classes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line reads REGISTRY without loading the scrape machinery
    from exporter.nvml.session import NvmlSession
    from exporter.scrape import Collector
    from exporter.settings import Settings


@dataclass(frozen=True)
class CollectorEntry:
    module: str
    class_name: str
    default_on: bool
    needs_nvml: bool


REGISTRY: dict[str, CollectorEntry] = {
    "gpu": CollectorEntry("exporter.collectors.gpu", "GpuCollector", True, True),
    "gpu_process": CollectorEntry(
        "exporter.collectors.gpu_process", "GpuProcessCollector", True, True
    ),
    "xid": CollectorEntry("exporter.collectors.xid", "XidCollector", True, True),
    "host": CollectorEntry("exporter.collectors.host", "HostCollector", True, False),
    "pci": CollectorEntry("exporter.collectors.pci", "PciCollector", True, True),
    "gpm": CollectorEntry("exporter.collectors.gpm", "GpmCollector", True, True),
    "pcie_throughput": CollectorEntry(
        "exporter.collectors.pcie_throughput", "PcieThroughputCollector", False, True
    ),
}


def create_collectors(settings: Settings, session: NvmlSession | None) -> list[Collector]:
    """Instances of the enabled collectors, in registry order; modules load only when used."""
    collectors: list[Collector] = []
    for name, entry in REGISTRY.items():
        if name not in settings.collectors:
            continue
        cls = getattr(importlib.import_module(entry.module), entry.class_name)
        collectors.append(cls(settings, session) if entry.needs_nvml else cls(settings))
    return collectors


def needs_nvml(settings: Settings) -> bool:
    return any(REGISTRY[name].needs_nvml for name in settings.collectors)
