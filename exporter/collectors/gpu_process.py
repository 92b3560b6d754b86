"""The `gpu_process` collector: device memory and SM utilisation of every process on each GPU.

`process` is the short name and `user` the owner; full command lines can hold secrets and stay
out. Names are cached by (pid, start time) so a long-running job costs one small /proc read per
scrape, and a pid reused by another program is never given the old program's name.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.families import Sample, specs
from exporter.nvml import NOT_FOUND, NVML_LANE, Gpu, NvmlSession, plausible
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings

FAMILIES = specs(
    (
        "rigwatch_gpu_process_memory_bytes",
        "gauge",
        "Device memory used by a process (compute and graphics contexts).",
    ),
    (
        "rigwatch_gpu_process_sm_utilization_ratio",
        "gauge",
        "Fraction of time the process had a kernel running on the SMs (0-1), latest sample.",
    ),
)

# How far back nvmlDeviceGetProcessUtilization samples are considered current.
SM_SAMPLE_WINDOW_SECONDS = 5.0
NAME_CACHE_LIMIT = 4096


class ProcessNames:
    """pid -> (process short name, user), cached by (pid, start time); bounded."""

    def __init__(self, procfs: str) -> None:
        self.procfs = procfs
        self._cache: dict[int, tuple[bytes, str, str]] = {}
        self._lock = threading.Lock()

    def _start_time(self, pid: int) -> bytes | None:
        # os.open/os.read: this runs for every GPU process on every scrape, and the buffered
        # file object costs several times the read itself.
        try:
            fd = os.open(f"{self.procfs}/{pid}/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            data = os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)
        # Field 22 (starttime) counted after the parenthesised command name, which may
        # itself contain spaces and parentheses.
        fields = data[data.rfind(b")") + 2 :].split(None, 20)
        return fields[19] if len(fields) > 19 else None

    def lookup(self, pid: int) -> tuple[str, str]:
        """("", "") for a process that is gone or cannot be read: never raises."""
        start = self._start_time(pid)
        if start is None:
            return "", ""
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == start:
            return cached[1], cached[2]
        name, user = _describe(pid)
        if name or user:
            with self._lock:
                if len(self._cache) >= NAME_CACHE_LIMIT:
                    self._cache.clear()
                self._cache[pid] = (start, name, user)
        return name, user


def _describe(pid: int) -> tuple[str, str]:
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name = process.name()
            try:
                user = process.username()
            except (KeyError, psutil.AccessDenied):
                # No passwd entry (a container user): the numeric uid still says who.
                user = str(process.uids().real)
    except psutil.NoSuchProcess:
        return "", ""
    except (psutil.AccessDenied, OSError):
        return "", ""
    return name, user


def read_processes(session: NvmlSession, names: ProcessNames, gpu: Gpu) -> list[Sample]:
    """One series per process on the card (run through NvmlSession.read_card)."""
    nv = session.nvml
    memory_by_pid: dict[int, int] = {}
    for what, fn in (
        ("nvmlDeviceGetComputeRunningProcesses", nv.nvmlDeviceGetComputeRunningProcesses),
        ("nvmlDeviceGetGraphicsRunningProcesses", nv.nvmlDeviceGetGraphicsRunningProcesses),
    ):
        for proc in session.call(gpu, what, fn) or ():
            used = proc.usedGpuMemory
            # A process with compute and graphics contexts is listed twice: one series.
            previous = memory_by_pid.get(proc.pid)
            if used is not None and (previous is None or used > previous):
                memory_by_pid[proc.pid] = used
            elif previous is None:
                memory_by_pid[proc.pid] = -1

    sm_by_pid: dict[int, tuple[int, int]] = {}
    if memory_by_pid and "nvmlDeviceGetProcessUtilization" not in gpu.unavailable:
        since = int((time.time() - SM_SAMPLE_WINDOW_SECONDS) * 1e6)
        try:
            samples = nv.nvmlDeviceGetProcessUtilization(gpu.handle, since)
        except nv.NVMLError as err:
            if err.value == NOT_FOUND:  # no samples in the window: nothing ran
                samples = []
            else:
                samples = session.call(gpu, "nvmlDeviceGetProcessUtilization", _raiser(err)) or []
        for sample in samples:
            if not plausible(sample.smUtil):
                continue
            latest = sm_by_pid.get(sample.pid)
            if latest is None or sample.timeStamp >= latest[0]:
                sm_by_pid[sample.pid] = (sample.timeStamp, sample.smUtil)

    out: list[Sample] = []
    for pid, used in memory_by_pid.items():
        process, user = names.lookup(pid)
        labels = {**gpu.labels, "pid": str(pid), "process": process, "user": user}
        if used >= 0:
            out.append(("rigwatch_gpu_process_memory_bytes", labels, used))
        sm = sm_by_pid.get(pid)
        if sm is not None:
            out.append(("rigwatch_gpu_process_sm_utilization_ratio", labels, sm[1] / 100))
    return out


def _raiser(err: Exception) -> Callable[[Any], Any]:
    """A stand-in call that fails like err did, to reuse the session's error policy."""

    def fail(_handle: Any) -> Any:
        raise err

    return fail


class GpuProcessCollector:
    name = "gpu_process"

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        self.session = session
        self.names = ProcessNames(settings.procfs.rstrip("/") or "/proc")

    def plan(self) -> list[Unit]:
        session, names = self.session, self.names
        return [
            Unit(
                f"gpu_process/{gpu.uuid}",
                partial(session.read_card, gpu, read_processes, session, names, gpu),
                NVML_LANE,
            )
            for gpu in session.gpus()
            if gpu.up
        ]

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(FAMILIES, outcomes), True

    def close(self) -> None:
        pass
