"""Bringing the NVML library up: shut down what ran before, initialise, read the driver's
versions and the card count, and identify each listed card. Errors come back as the one
sentence the exporter logs and serves (rigwatch_nvml_up's reason)."""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from exporter.nvml.device import Gpu, describe, text
from exporter.nvml.errors import LIBRARY_NOT_FOUND, FieldCalls, error_name
from rigwatch.oncelog import OnceLog


class NvmlUnavailable(Exception):
    """NVML could not be brought up; initialised: whether nvmlInit itself succeeded (then it
    must be shut down before the next attempt)."""

    def __init__(self, reason: str, initialised: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.initialised = initialised


@dataclass(frozen=True)
class Driver:
    count: int
    driver_version: str
    cuda_version: str


def restart(nv: Any, initialised: bool) -> Driver:
    """nvmlShutdown (when initialised) and nvmlInit, then the driver's facts; raises
    NvmlUnavailable saying why not (no GPU counted is unavailable too)."""
    if initialised:
        with suppress(nv.NVMLError):
            nv.nvmlShutdown()
    try:
        nv.nvmlInit()
    except nv.NVMLError as err:
        name = error_name(nv, err.value)
        hint = " (no libnvidia-ml.so.1 found)" if err.value == LIBRARY_NOT_FOUND else ""
        raise NvmlUnavailable(f"nvmlInit failed: {name}{hint}", False) from None
    try:
        count = nv.nvmlDeviceGetCount()
        driver = text(nv.nvmlSystemGetDriverVersion())
        try:
            cuda = nv.nvmlSystemGetCudaDriverVersion()
            cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except nv.NVMLError:
            cuda_version = ""
    except nv.NVMLError as err:
        reason = f"NVML query failed after init: {error_name(nv, err.value)}"
        raise NvmlUnavailable(reason, True) from None
    if count == 0:
        raise NvmlUnavailable("NVML found no GPUs", True)
    return Driver(count, driver, cuda_version)


def identify(
    nv: Any, calls: FieldCalls, once: OnceLog, index: int, failures: dict[int, str]
) -> Gpu | None:
    """The card at index with its static facts; None if it cannot be identified (why goes
    into failures)."""
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        uuid = text(nv.nvmlDeviceGetUUID(handle))
    except nv.NVMLError as err:
        failures[index] = error_name(nv, err.value).lower()
        once.log(
            logging.WARNING,
            ("identify", index, err.value),
            "GPU index %d cannot be identified: %s",
            index,
            error_name(nv, err.value),
        )
        return None
    return describe(nv, calls, uuid, index, handle)
