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
        success, insufficient_size = nv.NVML_SUCCESS, nv.NVML_ERROR_INSUFFICIENT_SIZE
        nvml_error = nv.NVMLError

        def direct(handle: Any) -> ProcessList:
            fn = get_pointer(symbol)  # raises FUNCTION_NOT_FOUND on a driver without it
            count = ctypes.c_uint(0)
            ret = fn(handle, ctypes.byref(count), None)
            if ret == success:
                return []
            if ret != insufficient_size:
                raise nvml_error(ret)
            # Room for processes started between the two calls, as pynvml allows.
            count.value = count.value * 2 + 5
            entries = (_ProcessInfo * count.value)()
            ret = fn(handle, ctypes.byref(count), entries)
            if ret != success:
                raise nvml_error(ret)
            return [
                (
                    proc.pid,
                    None if proc.usedGpuMemory == _ULL_NOT_AVAILABLE else proc.usedGpuMemory,
                )
                for proc in entries[: count.value]
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

        success, insufficient_size = nv.NVML_SUCCESS, nv.NVML_ERROR_INSUFFICIENT_SIZE
        nvml_error = nv.NVMLError

        def direct(handle: Any, since: int) -> UtilizationSamples:
            fn = get_pointer("nvmlDeviceGetProcessUtilization")
            count = ctypes.c_uint(0)
            stamp = ctypes.c_ulonglong(since)
            ret = fn(handle, None, ctypes.byref(count), stamp)
            if ret == success:
                return []
            if ret != insufficient_size:
                raise nvml_error(ret)
            samples = (_UtilizationSample * count.value)()
            ret = fn(handle, samples, ctypes.byref(count), stamp)
            if ret != success:
                raise nvml_error(ret)
            return [(s.pid, s.timeStamp, s.smUtil) for s in samples[: count.value]]

        return direct
