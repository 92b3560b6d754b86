"""The `pci` collector: every NVIDIA GPU on the PCI bus as sysfs shows it, whether NVML serves
it, its PCIe link and its AER error counters; sees cards the driver has lost or never had."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.exposition import LabelSet
from exporter.families import Sample, specs
from exporter.nvml.session import NVML_LANE, NvmlSession
from exporter.pci.bus import GpuFunction, PciBus
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings

FAMILIES = specs(
    (
        "rigwatch_pci_gpu_info",
        "gauge",
        "Every NVIDIA GPU function on the PCI bus, with its device id and driver; always 1.",
    ),
    (
        "rigwatch_pci_gpu_nvml_up",
        "gauge",
        "1 when NVML has a working handle for the GPU at this bus address, else 0.",
    ),
    ("rigwatch_pci_link_speed_transfers_per_second", "gauge", "Current PCIe link speed (sysfs)."),
    (
        "rigwatch_pci_link_max_speed_transfers_per_second",
        "gauge",
        "Maximum PCIe link speed of the function (sysfs).",
    ),
    ("rigwatch_pci_link_width", "gauge", "Current PCIe link width in lanes (sysfs)."),
    ("rigwatch_pci_link_max_width", "gauge", "Maximum PCIe link width in lanes (sysfs)."),
    (
        "rigwatch_pci_aer_events_total",
        "counter",
        "PCIe AER error events the kernel counted on the card's link, by severity; source says "
        "whether the card's own counters or its upstream port's.",
    ),
    (
        "rigwatch_pci_aer_errors_total",
        "counter",
        "PCIe AER error bits the kernel counted on the card's link, by severity and error name "
        "(an event can set several); only errors seen at least once.",
    ),
)


class _Labels:
    """One function's label sets, built once per bus address."""

    __slots__ = ("function", "base", "info", "aer")

    def __init__(self, function: GpuFunction) -> None:
        self.function = function
        self.base = LabelSet(pci_bus_id=function.bus_id)
        self.info: dict[str, LabelSet] = {}  # by driver
        self.aer: dict[tuple[str, str], LabelSet] = {}

    def info_for(self, driver: str) -> LabelSet:
        labels = self.info.get(driver)
        if labels is None:
            function = self.function
            labels = self.info[driver] = LabelSet(
                pci_bus_id=function.bus_id, device_id=function.device_id, driver=driver
            )
        return labels

    def aer_for(self, severity: str, error: str) -> LabelSet:
        """The labels of an error's counter, or of the severity's event total (error "")."""
        labels = self.aer.get((severity, error))
        if labels is None:
            named = {"error": error} if error else {}
            labels = self.aer[severity, error] = LabelSet(
                pci_bus_id=self.function.bus_id,
                source=self.function.aer_source,
                severity=severity,
                **named,
            )
        return labels


class PciCollector:
    name = "pci"
    families = FAMILIES

    def __init__(self, settings: Settings, session: NvmlSession | None) -> None:
        self.session = session
        self.bus = PciBus(settings.sysfs)
        self._labels: dict[str, _Labels] = {}

    def plan(self) -> list[Unit]:
        # The NVML collectors' lane, as the host's reads (see HOST_LANE in host.py).
        return [Unit("pci/bus", self.read, NVML_LANE)]

    def _served(self) -> set[str]:
        session = self.session
        if session is None or not session.up:
            return set()
        return {g.device.pci_bus_id for g in session.gpus() if g.up}

    def read(self) -> list[Sample]:
        bus = self.bus
        functions = bus.gpus()
        served = self._served()
        cache = self._labels
        if len(cache) > len(functions):
            present = {f.bus_id for f in functions}
            for bus_id in [b for b in cache if b not in present]:
                del cache[bus_id]
        out: list[Sample] = []
        for function in functions:
            labels = cache.get(function.bus_id)
            if labels is None or labels.function is not function:
                labels = cache[function.bus_id] = _Labels(function)
            base = labels.base
            out.append(("rigwatch_pci_gpu_info", labels.info_for(bus.driver(function)), 1))
            if self.session is not None:
                up = 1 if function.bus_id in served else 0
                out.append(("rigwatch_pci_gpu_nvml_up", base, up))
            speed, width = bus.link(function)
            if speed is not None:
                out.append(("rigwatch_pci_link_speed_transfers_per_second", base, speed))
            if function.max_speed is not None:
                out.append(
                    ("rigwatch_pci_link_max_speed_transfers_per_second", base, function.max_speed)
                )
            if width is not None:
                out.append(("rigwatch_pci_link_width", base, width))
            if function.max_width is not None:
                out.append(("rigwatch_pci_link_max_width", base, function.max_width))
            for count in bus.aer(function):
                if count.error == "TOTAL":
                    labels_for = labels.aer_for(count.severity, "")
                    out.append(("rigwatch_pci_aer_events_total", labels_for, count.count))
                elif count.count:
                    # An error never seen has no series: 44 zero counters a card were a third
                    # of an 8-card rig's series; the events total is always there for rules.
                    labels_for = labels.aer_for(count.severity, count.error)
                    out.append(("rigwatch_pci_aer_errors_total", labels_for, count.count))
        return out

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(FAMILIES, outcomes), True

    def close(self) -> None:
        pass
