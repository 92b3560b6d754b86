"""The `gpm` collector: what "GPU utilisation" hides, from NVML's GPU Performance Monitoring
(Hopper and later): SM activity and occupancy, tensor-core and other pipe activity, DRAM
bandwidth, PCIe and NVLink traffic.

GPM reports averages between two samples. Each scrape takes one sample per supported card and
serves the metrics between it and the sample the previous scrape took, so the values cover the
time since the last scrape and a scrape never waits a sampling interval. The first scrape after
start (or after NVML is re-initialised) only takes its sample. A scrape that comes less than
MIN_WINDOW_SECONDS after the previous one (a second Prometheus) is served the last window again
rather than a window too short to mean anything.

Cards without GPM (anything before Hopper, or a driver without it) have no series and no log
line: nvmlGpmQueryDeviceSupport is asked once per card and NVML initialisation.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from exporter.collectors.percard import CardLabels, PerCardCollector
from exporter.families import Sample, specs
from exporter.nvml.device import Device, Gpu
from exporter.nvml.errors import GPU_IS_LOST
from exporter.nvml.guard import STALE_READINGS_MAX_SECONDS
from exporter.nvml.session import NvmlSession
from exporter.settings import Settings
from rigwatch.logs import logger

LOG = logger("exporter", "gpm")

MIN_WINDOW_SECONDS = 1.0
MIB = 2**20

FAMILIES = specs(
    (
        "rigwatch_gpu_graphics_activity_ratio",
        "gauge",
        "Fraction of time any graphics or compute engine was active (GPM), since the last scrape.",
    ),
    (
        "rigwatch_gpu_sm_activity_ratio",
        "gauge",
        "Fraction of SMs busy, averaged over time (GPM), since the last scrape.",
    ),
    (
        "rigwatch_gpu_sm_occupancy_ratio",
        "gauge",
        "Resident warps as a fraction of the SMs' maximum (GPM), since the last scrape.",
    ),
    (
        "rigwatch_gpu_pipe_activity_ratio",
        "gauge",
        "Fraction of time the SMs' pipe was active (GPM): tensor (any), tensor_hmma, "
        "tensor_imma, tensor_dfma, fp64, fp32, fp16, integer; since the last scrape.",
    ),
    (
        "rigwatch_gpu_dram_bandwidth_utilization_ratio",
        "gauge",
        "Device memory bandwidth used as a fraction of the maximum (GPM), since the last scrape.",
    ),
    (
        "rigwatch_gpu_pcie_traffic_bytes_per_second",
        "gauge",
        "PCIe traffic by direction (GPM), averaged since the last scrape.",
    ),
    (
        "rigwatch_gpu_nvlink_traffic_bytes_per_second",
        "gauge",
        "NVLink traffic over all links by direction (GPM), averaged since the last scrape.",
    ),
    (
        "rigwatch_gpu_gpm_window_seconds",
        "gauge",
        "The time between the two GPM samples the card's GPM series were computed from.",
    ),
)

# (NVML_GPM_METRIC_* name, family, extra labels, scale to base units)
METRICS: tuple[tuple[str, str, tuple[tuple[str, str], ...], float], ...] = (
    ("GRAPHICS_UTIL", "rigwatch_gpu_graphics_activity_ratio", (), 0.01),
    ("SM_UTIL", "rigwatch_gpu_sm_activity_ratio", (), 0.01),
    ("SM_OCCUPANCY", "rigwatch_gpu_sm_occupancy_ratio", (), 0.01),
    ("ANY_TENSOR_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "tensor"),), 0.01),
    ("HMMA_TENSOR_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "tensor_hmma"),), 0.01),
    ("IMMA_TENSOR_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "tensor_imma"),), 0.01),
    ("DFMA_TENSOR_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "tensor_dfma"),), 0.01),
    ("FP64_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "fp64"),), 0.01),
    ("FP32_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "fp32"),), 0.01),
    ("FP16_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "fp16"),), 0.01),
    ("INTEGER_UTIL", "rigwatch_gpu_pipe_activity_ratio", (("pipe", "integer"),), 0.01),
    ("DRAM_BW_UTIL", "rigwatch_gpu_dram_bandwidth_utilization_ratio", (), 0.01),
    ("PCIE_TX_PER_SEC", "rigwatch_gpu_pcie_traffic_bytes_per_second", (("direction", "tx"),), MIB),
    ("PCIE_RX_PER_SEC", "rigwatch_gpu_pcie_traffic_bytes_per_second", (("direction", "rx"),), MIB),
    (
        "NVLINK_TOTAL_TX_PER_SEC",
        "rigwatch_gpu_nvlink_traffic_bytes_per_second",
        (("direction", "tx"),),
        MIB,
    ),
    (
        "NVLINK_TOTAL_RX_PER_SEC",
        "rigwatch_gpu_nvlink_traffic_bytes_per_second",
        (("direction", "rx"),),
        MIB,
    ),
)
# A percentage GPM computes can overshoot 100 a little on a short window; beyond this it is junk.
MAX_PERCENT = 105.0


@dataclass(eq=False)
class CardGpm:
    """One card's GPM state for one NVML initialisation (its Device)."""

    device: Device
    supported: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[Any] = field(default_factory=list)  # [previous, spare], allocated by NVML
    previous_at: float | None = None  # when samples[0] was taken
    request: Any = None  # the nvmlGpmMetricsGet_t reused scrape after scrape
    metrics: list[tuple[str, tuple[tuple[str, str], ...], float]] = field(default_factory=list)
    served: list[Sample] = field(default_factory=list)  # the last window's samples


class GpmCollector(PerCardCollector):
    name = "gpm"
    families = FAMILIES
    # The NVML lane, as the gpu collector: a lane per card costs more in thread hand-offs than
    # it saves (measured with bench_exporter.py), even though nvmlGpmMetricsGet takes 1.4-3.9
    # ms on a real driver (H200, driver 580).

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        super().__init__(settings, session)
        self._cards: dict[str, CardGpm] = {}

    def cards(self) -> list[Gpu]:
        """The cards up with GPM (support is known once per initialisation; a card not asked
        yet is read once to ask): a card without it costs no unit, scrape after scrape."""
        out = []
        for gpu in super().cards():
            state = self._cards.get(gpu.uuid)
            if state is None or state.device is not gpu.device or state.supported:
                out.append(gpu)
        return out

    def read_card(self, gpu: Gpu) -> list[Sample]:
        state = self._state(gpu)
        if not state.supported:
            return []
        with state.lock:
            return self._read(gpu, state, self.labels.get(gpu))

    def _state(self, gpu: Gpu) -> CardGpm:
        state = self._cards.get(gpu.uuid)
        if state is None or state.device is not gpu.device:
            old = state
            state = self._cards[gpu.uuid] = CardGpm(gpu.device, self._supported(gpu))
            if old is not None:
                self._free(old)
                # NVML was re-initialised (another card lost, say): this card's first scrape
                # since only takes a sample, so it serves the window before, if recent, as
                # the session serves a healthy card's previous readings meanwhile.
                recent = old.previous_at is not None and (
                    time.monotonic() - old.previous_at <= STALE_READINGS_MAX_SECONDS
                )
                state.served = old.served if recent and state.supported else []
        return state

    def _supported(self, gpu: Gpu) -> bool:
        """nvmlGpmQueryDeviceSupport, quietly: most cards have no GPM and that is no news."""
        nv = self.session.nvml
        query = getattr(nv, "nvmlGpmQueryDeviceSupport", None)
        if query is None:
            return False
        try:
            supported = bool(query(gpu.device.handle).isSupportedDevice)
        except nv.NVMLError as err:
            if err.value == GPU_IS_LOST:
                self.session.report_lost(gpu)
            LOG.debug("GPU %s: no GPM (%s)", gpu.device.index, err)
            return False
        if supported:
            LOG.debug("GPU %s (%s) supports GPM", gpu.device.index, gpu.uuid)
        return supported

    def _read(self, gpu: Gpu, state: CardGpm, card: CardLabels) -> list[Sample]:
        session, nv = self.session, self.session.nvml
        now = time.monotonic()
        if state.previous_at is not None and now - state.previous_at < MIN_WINDOW_SECONDS:
            return state.served
        if not state.samples:
            state.samples = [nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()]
            state.request, state.metrics = self._request(nv)
        previous, spare = state.samples
        if session.call(gpu, "nvmlGpmSampleGet", nv.nvmlGpmSampleGet, spare) is None:
            # Failed (logged once): start again from the next sample that succeeds.
            state.previous_at, state.served = None, []
            return []
        taken_at = time.monotonic()
        state.samples = [spare, previous]
        if state.previous_at is None:
            state.previous_at = taken_at
            return state.served  # empty, or the window from before a re-initialisation
        window = taken_at - state.previous_at
        state.previous_at = taken_at
        request = state.request
        request.sample1, request.sample2 = previous, spare
        if session.call(gpu, "nvmlGpmMetricsGet", _metrics_get(nv), request) is None:
            state.served = []
            return []
        state.served = self._samples(gpu, request, state.metrics, card, window)
        return state.served

    @staticmethod
    def _request(nv: Any) -> tuple[Any, list[tuple[str, tuple[tuple[str, str], ...], float]]]:
        """The metrics request with every metric this pynvml names, and their series."""
        request = nv.c_nvmlGpmMetricsGet_t()
        request.version = nv.NVML_GPM_METRICS_GET_VERSION
        metrics = []
        for name, family, extra, scale in METRICS:
            metric_id = getattr(nv, f"NVML_GPM_METRIC_{name}", None)
            if metric_id is None:
                continue
            request.metrics[len(metrics)].metricId = metric_id
            metrics.append((family, extra, scale))
        request.numMetrics = len(metrics)
        return request, metrics

    def _samples(
        self,
        gpu: Gpu,
        request: Any,
        metrics: list[tuple[str, tuple[tuple[str, str], ...], float]],
        card: CardLabels,
        window: float,
    ) -> list[Sample]:
        out: list[Sample] = []
        for index, (family, extra, scale) in enumerate(metrics):
            metric = request.metrics[index]
            if metric.nvmlReturn != 0:
                continue  # this card or driver does not compute that metric
            value = metric.value
            limit = MAX_PERCENT if scale == 0.01 else float("inf")
            if not 0 <= value <= limit:  # NaN fails both
                self.session.log_implausible(gpu, family, value)
                continue
            labels = card.with_extra(extra) if extra else card.base
            out.append(
                (family, labels, min(value * scale, 1.0) if scale == 0.01 else value * scale)
            )
        out.append(("rigwatch_gpu_gpm_window_seconds", card.base, window))
        return out

    def _free(self, state: CardGpm) -> None:
        nv = self.session.nvml
        for sample in state.samples:
            with contextlib.suppress(Exception):
                nv.nvmlGpmSampleFree(sample)
        state.samples = []

    def close(self) -> None:
        for state in self._cards.values():
            self._free(state)
        self._cards.clear()


def _metrics_get(nv: Any):
    """nvmlGpmMetricsGet as the per-card policy calls it: fn(handle, *args)."""

    def metrics_get(_handle: Any, request: Any) -> Any:
        return nv.nvmlGpmMetricsGet(request)

    return metrics_get
