"""The floor for bench_exporter.py: the exporter's NVML and psutil reads done bare in a loop.

Run by the bench as a child process with the simulated library in its environment:
`python3 bench/floor_reader.py ITERATIONS WARMUP` prints one JSON object of per-iteration
timings (seconds). Static values and process names are read once, as the exporter does; each
iteration pays one /proc/<pid>/stat read per process to notice a reused pid. Nothing is
formatted or served. The same name lookups done uncached with psutil are timed on the side, to
show what the exporter's cache is worth.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import pynvml as n


class Reads:
    """The handles, static facts and name cache the loop keeps, and its NVML call count."""

    def __init__(self) -> None:
        self.calls = 0
        self.handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
        clocks = (n.NVML_CLOCK_GRAPHICS, n.NVML_CLOCK_SM, n.NVML_CLOCK_MEM, n.NVML_CLOCK_VIDEO)
        event_reasons = (
            getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or n.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        # Every per-scrape read of a card but its fans and process lists, as (function, args
        # after the handle): what the gpu collector reads.
        self.card_reads: list[tuple[Callable[..., Any], tuple]] = [
            (n.nvmlDeviceGetTemperature, (n.NVML_TEMPERATURE_GPU,)),
            (n.nvmlDeviceGetFieldValues, ([n.NVML_FI_DEV_MEMORY_TEMP],)),
            *(
                (fn, ())
                for fn in (
                    n.nvmlDeviceGetPowerUsage,
                    n.nvmlDeviceGetEnforcedPowerLimit,
                    n.nvmlDeviceGetTotalEnergyConsumption,
                    n.nvmlDeviceGetUtilizationRates,
                    n.nvmlDeviceGetEncoderUtilization,
                    n.nvmlDeviceGetDecoderUtilization,
                    n.nvmlDeviceGetPerformanceState,
                    event_reasons,
                    n.nvmlDeviceGetCurrPcieLinkGeneration,
                    n.nvmlDeviceGetCurrPcieLinkWidth,
                    n.nvmlDeviceGetPcieReplayCounter,
                    n.nvmlDeviceGetRemappedRows,
                )
            ),
            (n.nvmlDeviceGetMemoryInfo, (n.nvmlMemory_v2,)),
            # Modes and health read every scrape (the identity and limits are static).
            (n.nvmlDeviceGetPersistenceMode, ()),
            (n.nvmlDeviceGetComputeMode, ()),
            (n.nvmlDeviceGetRetiredPages, (0,)),
            (n.nvmlDeviceGetRetiredPages, (1,)),
            (n.nvmlDeviceGetRetiredPagesPendingStatus, ()),
            (n.nvmlDeviceGetEncoderStats, ()),
            *((n.nvmlDeviceGetClockInfo, (clock,)) for clock in clocks),
            *(
                (n.nvmlDeviceGetTotalEccErrors, (error_type, counter))
                for error_type in (
                    n.NVML_MEMORY_ERROR_TYPE_CORRECTED,
                    n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                )
                for counter in (n.NVML_VOLATILE_ECC, n.NVML_AGGREGATE_ECC)
            ),
        ]
        thresholds = (n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, n.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
        self.fan_counts = []
        for h in self.handles:
            for threshold in thresholds:
                self.call(n.nvmlDeviceGetTemperatureThreshold, h, threshold)
            for clock in clocks:
                self.call(n.nvmlDeviceGetMaxClockInfo, h, clock)
            self.call(n.nvmlDeviceGetMaxPcieLinkGeneration, h)
            self.call(n.nvmlDeviceGetMaxPcieLinkWidth, h)
            self.fan_counts.append(self.call(n.nvmlDeviceGetNumFans, h) or 0)
        self.boot_time = psutil.boot_time()
        self.names: dict[int, tuple[bytes, str, str]] = {}
        # GPM (the gpm collector): per supported card one sample per iteration and the metrics
        # against the previous iteration's sample, with the request built once.
        self.gpm: list[tuple[Any, list, Any]] = []
        for h in self.handles:
            try:
                if not n.nvmlGpmQueryDeviceSupport(h).isSupportedDevice:
                    continue
            except (n.NVMLError, AttributeError):
                continue
            request = n.c_nvmlGpmMetricsGet_t()
            request.version = n.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(GPM_METRICS)
            for i, name in enumerate(GPM_METRICS):
                request.metrics[i].metricId = getattr(n, f"NVML_GPM_METRIC_{name}")
            samples = [n.nvmlGpmSampleAlloc(), n.nvmlGpmSampleAlloc()]
            n.nvmlGpmSampleGet(h, samples[0])
            self.gpm.append((h, samples, request))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        try:
            return fn(*args)
        except n.NVMLError:
            return None

    def nvml(self) -> set[int]:
        """Every per-scrape NVML read of every card; the pids NVML lists."""
        call = self.call
        pids: set[int] = set()
        for h, fans in zip(self.handles, self.fan_counts, strict=True):
            for fn, args in self.card_reads:
                call(fn, h, *args)
            for fan in range(fans):
                call(n.nvmlDeviceGetFanSpeed_v2, h, fan)
            for proc in call(n.nvmlDeviceGetComputeRunningProcesses, h) or []:
                pids.add(proc.pid)
            for proc in call(n.nvmlDeviceGetGraphicsRunningProcesses, h) or []:
                pids.add(proc.pid)
            call(n.nvmlDeviceGetProcessUtilization, h, int((time.time() - 5) * 1e6))
        for h, samples, request in self.gpm:
            call(n.nvmlGpmSampleGet, h, samples[1])
            request.sample1, request.sample2 = samples
            self.calls += 1
            with contextlib.suppress(n.NVMLError):
                n.nvmlGpmMetricsGet(request)
            samples.reverse()
        return pids

    def processes(self, pids: set[int]) -> None:
        """Each pid's start time, and its name and user when the pid is new or reused."""
        names = self.names
        for pid in pids:
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
                try:
                    start = os.read(fd, 4096).rsplit(b")", 1)[1].split()[19]
                finally:
                    os.close(fd)
            except (OSError, IndexError):
                continue
            known = names.get(pid)
            if known is None or known[0] != start:
                names[pid] = (start, *describe(pid))


GPM_METRICS = (
    "GRAPHICS_UTIL",
    "SM_UTIL",
    "SM_OCCUPANCY",
    "ANY_TENSOR_UTIL",
    "HMMA_TENSOR_UTIL",
    "IMMA_TENSOR_UTIL",
    "DFMA_TENSOR_UTIL",
    "FP64_UTIL",
    "FP32_UTIL",
    "FP16_UTIL",
    "INTEGER_UTIL",
    "DRAM_BW_UTIL",
    "PCIE_TX_PER_SEC",
    "PCIE_RX_PER_SEC",
    "NVLINK_TOTAL_TX_PER_SEC",
    "NVLINK_TOTAL_RX_PER_SEC",
)


def describe(pid: int) -> tuple[str, str]:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.name(), process.username()
    except psutil.Error:
        return "", ""


def host_reads() -> None:
    psutil.cpu_times(percpu=True)
    psutil.getloadavg()
    psutil.virtual_memory()
    psutil.swap_memory()
    for part in psutil.disk_partitions(all=False):
        with contextlib.suppress(OSError):
            psutil.disk_usage(part.mountpoint)
    psutil.disk_io_counters(perdisk=True)
    psutil.net_io_counters(pernic=True)
    psutil.sensors_temperatures()
    psutil.sensors_fans()


def main(argv: list[str]) -> int:
    iterations, warmup = int(argv[0]), int(argv[1])
    n.nvmlInit()
    reads = Reads()
    out: dict[str, Any] = {key: [] for key in ("total", "nvml", "proc", "host", "uncached", "pids")}
    for i in range(warmup + iterations):
        reads.calls = 0
        t0 = time.perf_counter()
        pids = reads.nvml()
        t1 = time.perf_counter()
        reads.processes(pids)
        t2 = time.perf_counter()
        host_reads()
        t3 = time.perf_counter()
        for pid in pids:
            describe(pid)
        t4 = time.perf_counter()
        if i >= warmup:
            for key, value in (
                ("total", t3 - t0),
                ("nvml", t1 - t0),
                ("proc", t2 - t1),
                ("host", t3 - t2),
                ("uncached", t4 - t3),
                ("pids", len(pids)),
            ):
                out[key].append(value)
    out["nvml_calls"] = reads.calls
    out["devices"] = len(reads.handles)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
