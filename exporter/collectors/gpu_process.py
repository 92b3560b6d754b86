"""The `gpu_process` collector: device memory and SM utilisation of every process on each GPU.

`process` is the short name and `user` the owner; full command lines can hold secrets and stay
out. Names are cached by (pid, start time) so a long-running job costs one small /proc read per
scrape, and a pid reused by another program is never given the old program's name.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from exporter.collectors.percard import PerCardCollector
from exporter.collectors.runinfo import RunInfo
from exporter.exposition import LabelSet
from exporter.families import Sample, specs
from exporter.nvml import NOT_FOUND, Gpu, NvmlSession, plausible
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
    (
        "rigwatch_gpu_process_start_time_seconds",
        "gauge",
        "When the process started (seconds since the epoch), with its run name and container.",
    ),
)

# How far back nvmlDeviceGetProcessUtilization samples are considered current.
SM_SAMPLE_WINDOW_SECONDS = 5.0
NAME_CACHE_LIMIT = 4096


class ProcessNames:
    """pid -> (process short name, user), cached by (pid, start time); bounded."""

    def __init__(self, procfs: str, full_command_line: bool = False) -> None:
        self.procfs = procfs
        self.runs = RunInfo(procfs, full_command_line)
        self._cache: dict[int, tuple[bytes, str, str]] = {}
        self._lock = threading.Lock()
        # A process's label set on a card, built once while it keeps its pid, name and owner.
        self._label_sets: dict[tuple[str, str, int, str, str], LabelSet] = {}
        self._run_label_sets: dict[tuple, LabelSet] = {}

    def labels(self, gpu: Gpu, pid: int) -> LabelSet:
        """gpu, uuid, pid, process and user labels of pid on gpu (never raises)."""
        process, user = self.lookup(pid)
        key = (gpu.index, gpu.uuid, pid, process, user)
        labels = self._label_sets.get(key)
        if labels is None:
            with self._lock:
                if len(self._label_sets) >= NAME_CACHE_LIMIT:
                    self._label_sets.clear()
                labels = self._label_sets[key] = LabelSet(
                    gpu=gpu.index, uuid=gpu.uuid, pid=str(pid), process=process, user=user
                )
        return labels

    def start_sample(self, gpu: Gpu, pid: int, labels: LabelSet) -> Sample | None:
        """The process's start time, labelled with its run name and container; None when the
        process is gone (a pid NVML still lists but /proc no longer has)."""
        start = self._start_time(pid)
        if start is None:
            return None
        seconds, run, container = self.runs.lookup(pid, start, labels["process"])
        key = (*labels.values(), run, container)
        run_labels = self._run_label_sets.get(key)
        if run_labels is None:
            with self._lock:
                if len(self._run_label_sets) >= NAME_CACHE_LIMIT:
                    self._run_label_sets.clear()
                run_labels = self._run_label_sets[key] = LabelSet(
                    labels, run=run, container=container
                )
        return ("rigwatch_gpu_process_start_time_seconds", run_labels, seconds)

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


class _ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t as nvml.h declares it (the _v2/_v3 process-list calls fill these).
    A plain structure: pynvml's own class checks every field read for bytes to decode."""

    _fields_ = (
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    )


def _process_lister(nv: Any, function: str) -> Callable[[Any], list[tuple[int, int | None]]]:
    """A reader of one NVML running-process list as (pid, used bytes or None) pairs.

    pynvml's own wrapper turns every process entry into a dict-backed object (about 20 µs each,
    more than the NVML call); this makes the same two calls (size, then data) and reads the
    two fields it needs straight from the ctypes array. Falls back to pynvml's wrapper when
    this pynvml lacks the pieces it uses."""
    get_pointer = getattr(nv, "_nvmlGetFunctionPointer", None)
    if get_pointer is None:
        wrapper = getattr(nv, function)

        def via_pynvml(handle: Any) -> list[tuple[int, int | None]]:
            return [(proc.pid, proc.usedGpuMemory) for proc in wrapper(handle)]

        return via_pynvml

    symbol = function + "_v3"
    not_available = 0xFFFFFFFFFFFFFFFF
    success, insufficient_size = nv.NVML_SUCCESS, nv.NVML_ERROR_INSUFFICIENT_SIZE

    def direct(handle: Any) -> list[tuple[int, int | None]]:
        fn = get_pointer(symbol)  # raises FUNCTION_NOT_FOUND on a driver without it
        count = ctypes.c_uint(0)
        ret = fn(handle, ctypes.byref(count), None)
        if ret == success:
            return []
        if ret != insufficient_size:
            raise nv.NVMLError(ret)
        # Room for processes started between the two calls, as pynvml allows.
        count.value = count.value * 2 + 5
        entries = (_ProcessInfo * count.value)()
        ret = fn(handle, ctypes.byref(count), entries)
        if ret != success:
            raise nv.NVMLError(ret)
        return [
            (proc.pid, None if proc.usedGpuMemory == not_available else proc.usedGpuMemory)
            for proc in entries[: count.value]
        ]

    return direct


class _UtilizationSample(ctypes.Structure):
    """nvmlProcessUtilizationSample_t as nvml.h declares it; plain, like _ProcessInfo."""

    _fields_ = (
        ("pid", ctypes.c_uint),
        ("timeStamp", ctypes.c_ulonglong),
        ("smUtil", ctypes.c_uint),
        ("memUtil", ctypes.c_uint),
        ("encUtil", ctypes.c_uint),
        ("decUtil", ctypes.c_uint),
    )


def _utilization_reader(nv: Any) -> Callable[[Any, int], list[tuple[int, int, int]]]:
    """A reader of nvmlDeviceGetProcessUtilization as (pid, timestamp µs, SM percent) triples,
    with the same two calls as pynvml's wrapper but without its per-field attribute hook."""
    get_pointer = getattr(nv, "_nvmlGetFunctionPointer", None)
    if get_pointer is None:

        def via_pynvml(handle: Any, since: int) -> list[tuple[int, int, int]]:
            samples = nv.nvmlDeviceGetProcessUtilization(handle, since)
            return [(s.pid, s.timeStamp, s.smUtil) for s in samples]

        return via_pynvml

    success, insufficient_size = nv.NVML_SUCCESS, nv.NVML_ERROR_INSUFFICIENT_SIZE

    def direct(handle: Any, since: int) -> list[tuple[int, int, int]]:
        fn = get_pointer("nvmlDeviceGetProcessUtilization")
        count = ctypes.c_uint(0)
        stamp = ctypes.c_ulonglong(since)
        ret = fn(handle, None, ctypes.byref(count), stamp)
        if ret == success:
            return []
        if ret != insufficient_size:
            raise nv.NVMLError(ret)
        samples = (_UtilizationSample * count.value)()
        ret = fn(handle, samples, ctypes.byref(count), stamp)
        if ret != success:
            raise nv.NVMLError(ret)
        return [(s.pid, s.timeStamp, s.smUtil) for s in samples[: count.value]]

    return direct


_listers: dict[tuple[int, str], Callable[[Any], list[tuple[int, int | None]]]] = {}
_utilization_readers: dict[int, Callable[[Any, int], list[tuple[int, int, int]]]] = {}


def running_processes(session: NvmlSession, gpu: Gpu, what: str) -> list[tuple[int, int | None]]:
    """(pid, used bytes or None) for each process in NVML's list `what` on the card; empty
    when the list is unavailable (the session's per-field error policy applies)."""
    nv = session.nvml
    lister = _listers.get((id(nv), what))
    if lister is None:
        lister = _listers[(id(nv), what)] = _process_lister(nv, what)
    return session.call(gpu, what, lister) or []


def read_processes(session: NvmlSession, names: ProcessNames, gpu: Gpu) -> list[Sample]:
    """One series per process on the card (run through NvmlSession.read_card)."""
    nv = session.nvml
    memory_by_pid: dict[int, int] = {}
    for what in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for pid, used in running_processes(session, gpu, what):
            # A process with compute and graphics contexts is listed twice: one series.
            previous = memory_by_pid.get(pid)
            if used is not None and (previous is None or used > previous):
                memory_by_pid[pid] = used
            elif previous is None:
                memory_by_pid[pid] = -1

    sm_by_pid: dict[int, tuple[int, int]] = {}
    if memory_by_pid and "nvmlDeviceGetProcessUtilization" not in gpu.unavailable:
        since = int((time.time() - SM_SAMPLE_WINDOW_SECONDS) * 1e6)
        reader = _utilization_readers.get(id(nv))
        if reader is None:
            reader = _utilization_readers[id(nv)] = _utilization_reader(nv)
        try:
            samples = reader(gpu.handle, since)
        except nv.NVMLError as err:
            if err.value == NOT_FOUND:  # no samples in the window: nothing ran
                samples = []
            else:
                samples = session.call(gpu, "nvmlDeviceGetProcessUtilization", _raiser(err)) or []
        for pid, stamp, sm_util in samples:
            if not plausible(sm_util):
                continue
            latest = sm_by_pid.get(pid)
            if latest is None or stamp >= latest[0]:
                sm_by_pid[pid] = (stamp, sm_util)

    out: list[Sample] = []
    for pid, used in memory_by_pid.items():
        labels = names.labels(gpu, pid)
        if used >= 0:
            out.append(("rigwatch_gpu_process_memory_bytes", labels, used))
        sm = sm_by_pid.get(pid)
        if sm is not None:
            out.append(("rigwatch_gpu_process_sm_utilization_ratio", labels, sm[1] / 100))
        start = names.start_sample(gpu, pid, labels)
        if start is not None:
            out.append(start)
    return out


def _raiser(err: Exception) -> Callable[[Any], Any]:
    """A stand-in call that fails like err did, to reuse the session's error policy."""

    def fail(_handle: Any) -> Any:
        raise err

    return fail


class GpuProcessCollector(PerCardCollector):
    name = "gpu_process"
    families = FAMILIES

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        super().__init__(settings, session)
        self.names = ProcessNames(
            settings.procfs.rstrip("/") or "/proc", settings.process_full_command_line
        )

    def read_card(self, gpu: Gpu) -> list[Sample]:
        return read_processes(self.session, self.names, gpu)
