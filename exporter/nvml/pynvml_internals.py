"""The one place that reaches past pynvml's public calls: NVML's process lists and process
utilisation read through pynvml's private `_nvmlGetFunctionPointer`, straight into plain ctypes
arrays. pynvml's wrappers turn every entry into a dict-backed object (about 20 µs each, more
than the NVML call). tests/exporter/test_pynvml_internals.py checks these readers against
pynvml's public calls on the simulated library; a pynvml without the private entry point gets
its public calls instead."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

ProcessList = list[tuple[int, int | None]]  # (pid, used bytes or None when not available)
UtilizationSamples = list[tuple[int, int, int]]  # (pid, timestamp µs, SM percent)

_ULL_NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF


class _ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t as nvml.h declares it (the _v2/_v3 process-list calls fill these)."""

    _fields_ = (
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    )


class _UtilizationSample(ctypes.Structure):
    """nvmlProcessUtilizationSample_t as nvml.h declares it."""

    _fields_ = (
        ("pid", ctypes.c_uint),
        ("timeStamp", ctypes.c_ulonglong),
        ("smUtil", ctypes.c_uint),
        ("memUtil", ctypes.c_uint),
        ("encUtil", ctypes.c_uint),
        ("decUtil", ctypes.c_uint),
    )


def _two_calls(
    call: Callable[[Any, Any], int],
    entry: type[ctypes.Structure],
    nv: Any,
    headroom: Callable[[int], int] = lambda count: count,
) -> list:
    """NVML's two-call protocol for a list: call(None, count) answers the size (SUCCESS when
    the list is empty), then call(array, count) fills an array that large plus headroom."""
    count = ctypes.c_uint(0)
    ret = call(None, ctypes.byref(count))
    if ret == nv.NVML_SUCCESS:
        return []
    if ret != nv.NVML_ERROR_INSUFFICIENT_SIZE:
        raise nv.NVMLError(ret)
    count.value = headroom(count.value)
    entries = (entry * count.value)()
    ret = call(entries, ctypes.byref(count))
    if ret != nv.NVML_SUCCESS:
        raise nv.NVMLError(ret)
    return entries[: count.value]


def _with_room(count: int) -> int:
    # Room for processes started between the two calls, as pynvml allows.
    return count * 2 + 5


class ProcessReads:
    """Readers for one loaded pynvml module; build one per module and keep it."""

    def __init__(self, nv: Any) -> None:
        self.nv = nv
        self.compute_processes = self._process_lister("nvmlDeviceGetComputeRunningProcesses")
        self.graphics_processes = self._process_lister("nvmlDeviceGetGraphicsRunningProcesses")
        self.utilization = self._utilization_reader()

    def _process_lister(self, function: str) -> Callable[[Any], ProcessList]:
        nv = self.nv
        get_pointer = getattr(nv, "_nvmlGetFunctionPointer", None)
        if get_pointer is None:
            wrapper = getattr(nv, function)

            def via_pynvml(handle: Any) -> ProcessList:
                return [(proc.pid, proc.usedGpuMemory) for proc in wrapper(handle)]

            return via_pynvml

        symbol = function + "_v3"

        def direct(handle: Any) -> ProcessList:
            fn = get_pointer(symbol)  # raises FUNCTION_NOT_FOUND on a driver without it
            entries = _two_calls(
                lambda array, count: fn(handle, count, array), _ProcessInfo, nv, _with_room
            )
            return [
                (
                    proc.pid,
                    None if proc.usedGpuMemory == _ULL_NOT_AVAILABLE else proc.usedGpuMemory,
                )
                for proc in entries
            ]

        return direct

    def _utilization_reader(self) -> Callable[[Any, int], UtilizationSamples]:
        nv = self.nv
        get_pointer = getattr(nv, "_nvmlGetFunctionPointer", None)
        if get_pointer is None:

            def via_pynvml(handle: Any, since: int) -> UtilizationSamples:
                samples = nv.nvmlDeviceGetProcessUtilization(handle, since)
                return [(s.pid, s.timeStamp, s.smUtil) for s in samples]

            return via_pynvml

        def direct(handle: Any, since: int) -> UtilizationSamples:
            fn = get_pointer("nvmlDeviceGetProcessUtilization")
            stamp = ctypes.c_ulonglong(since)
            samples = _two_calls(
                lambda array, count: fn(handle, array, count, stamp), _UtilizationSample, nv
            )
            return [(s.pid, s.timeStamp, s.smUtil) for s in samples]

        return direct
