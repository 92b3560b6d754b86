"""The `pcie_throughput` collector (off by default): PCIe bytes per second per card.

NVML samples each direction for about 20 ms, so this costs ~40 ms per card per scrape; cards
run in parallel (one unit each), so a scrape pays that once, not once per card.
"""

from __future__ import annotations

from exporter.collectors.percard import CardLabels, PerCardCollector
from exporter.families import Sample, specs
from exporter.nvml.device import Gpu
from exporter.nvml.errors import plausible
from exporter.nvml.session import NvmlSession

FAMILIES = specs(
    (
        "rigwatch_gpu_pcie_throughput_bytes_per_second",
        "gauge",
        "PCIe traffic over the last ~20 ms sample, by direction.",
    ),
)


_DIRECTION_LABELS = {direction: (("direction", direction),) for direction in ("tx", "rx")}


def read_throughput(session: NvmlSession, gpu: Gpu, card: CardLabels) -> list[Sample]:
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
        labels = card.with_extra(_DIRECTION_LABELS[direction])
        out.append(("rigwatch_gpu_pcie_throughput_bytes_per_second", labels, kilobytes * 1024))
    return out


class PcieThroughputCollector(PerCardCollector):
    name = "pcie_throughput"
    families = FAMILIES
    # Its own lane per card: each call sleeps ~20 ms in NVML, so cards run in parallel.
    lane = None

    def read_card(self, gpu: Gpu) -> list[Sample]:
        return read_throughput(self.session, gpu, self.labels.get(gpu))
