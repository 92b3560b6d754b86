"""The `pcie_throughput` collector (off by default): PCIe bytes per second per card.

NVML samples each direction for about 20 ms, so this costs ~40 ms per card per scrape; cards
run in parallel (one unit each), so a scrape pays that once, not once per card.
"""

from __future__ import annotations

from functools import partial

from prometheus_client.metrics_core import Metric

from exporter.families import Sample, specs
from exporter.nvml import Gpu, NvmlSession, plausible
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings

FAMILIES = specs(
    (
        "rigwatch_gpu_pcie_throughput_bytes_per_second",
        "gauge",
        "PCIe traffic over the last ~20 ms sample, by direction.",
    ),
)


def read_throughput(session: NvmlSession, gpu: Gpu) -> list[Sample]:
    """Both directions of one card (run through NvmlSession.read_card)."""
    nv = session.nvml
    out: list[Sample] = []
    for direction, counter in (
        ("tx", nv.NVML_PCIE_UTIL_TX_BYTES),
        ("rx", nv.NVML_PCIE_UTIL_RX_BYTES),
    ):
        kilobytes = session.call(
            gpu, "nvmlDeviceGetPcieThroughput", nv.nvmlDeviceGetPcieThroughput, counter
        )
        if kilobytes is None:
            continue
        if not plausible(kilobytes):
            session.log_implausible(gpu, "nvmlDeviceGetPcieThroughput", kilobytes)
            continue
        labels = gpu.labels_with(direction=direction)
        out.append(("rigwatch_gpu_pcie_throughput_bytes_per_second", labels, kilobytes * 1024))
    return out


class PcieThroughputCollector:
    name = "pcie_throughput"

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        self.session = session

    def plan(self) -> list[Unit]:
        session = self.session
        return [
            Unit(
                f"pcie_throughput/{gpu.uuid}",
                partial(session.read_card, gpu, read_throughput, session, gpu),
                # Its own lane per card: each call sleeps ~20 ms in NVML, so cards in parallel.
                f"pcie_throughput/{gpu.uuid}",
            )
            for gpu in session.gpus()
            if gpu.up
        ]

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(FAMILIES, outcomes), True

    def close(self) -> None:
        pass
