"""What NVML's answers mean for a series: return codes, "not available" values, and the
per-field policy that turns a failed call into a left-out series, a lost card or a log line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "nvml")

if TYPE_CHECKING:
    from exporter.nvml.device import Gpu

# NVML return codes (nvml.h); kept here so nothing needs pynvml before it is loaded.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
ARGUMENT_VERSION_MISMATCH = 25
# A field answering one of these is simply not available on this card (or to this user, or
# through this version of the call on this driver).
UNAVAILABLE = frozenset(
    {NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH}
)

# What NVML writes into an unsigned field it cannot fill (NVML_VALUE_NOT_AVAILABLE as uint and
# unsigned long long, and the signed -1 seen through a 32-bit int). Exporting them would put
# 4294967295 °C or 1.8e19 bytes on a dashboard; readings equal to them are left out instead.
NOT_AVAILABLE_VALUES = frozenset({0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFF})


class GpuLost(Exception):
    """A call on the card answered GPU_IS_LOST."""


def plausible(value: Any) -> bool:
    """False for NVML's "not available" values, negative numbers (unsigned fields), NaN and
    infinity (double-valued fields)."""
    return 0 <= value < 0xFFFFFFFFFFFFFFFF and value not in NOT_AVAILABLE_VALUES


def error_name(nvml: Any, code: int) -> str:
    """NVML_ERROR_GPU_IS_LOST -> "GPU_IS_LOST", as pynvml names the code."""
    for key, value in vars(nvml).items():
        if key.startswith("NVML_ERROR_") and value == code:
            return key[len("NVML_ERROR_") :]
    return f"error {code}"


class FieldCalls:
    """NVML calls on one card with the per-field error policy (one instance per loaded pynvml).

    NOT_SUPPORTED / NO_PERMISSION are logged once per card and field at debug level and the
    function is not called again on this card until NVML is re-initialised; report_unavailable()
    (after each scrape) sums up the fields a card newly lacks in one INFO line per card, since a
    consumer card lacks several and five lines each at start read like five problems.
    GPU_IS_LOST raises GpuLost after report_lost(gpu). Anything else is logged once and leaves
    the field out while it fails.
    """

    def __init__(self, nvml: Any, once: OnceLog, report_lost: Callable[[Gpu], None]) -> None:
        self.nvml = nvml
        self.once = once
        self.report_lost = report_lost
        self._nvml_error = nvml.NVMLError
        # Cards with fields found unavailable since the last report: uuid -> (index, [why what]).
        self._unreported: dict[str, tuple[str, list[str]]] = {}
        self._unreported_lock = threading.Lock()

    def call(self, gpu: Gpu, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(handle, *args) on the card; None when the field is unavailable."""
        device = gpu.device
        if what in device.unavailable:
            return None
        try:
            return fn(device.handle, *args)
        except self._nvml_error as err:
            return self._failed(gpu, what, err.value)
        except Exception as err:
            # pynvml raises this (not an NVMLError) when a driver older than the binding lacks
            # a function's current version: the field is as unavailable as NOT_SUPPORTED.
            if err.__class__.__name__ != "NVMLLibraryMismatchError":
                raise
            self._unavailable(gpu, what, "is missing from this driver")
            return None

    def _unavailable(self, gpu: Gpu, what: str, why: str) -> None:
        """Not called again on this card until NVML is re-initialised; logged once."""
        gpu.device.unavailable.add(what)
        first = self.once.log(
            logging.DEBUG,
            ("unavailable", gpu.uuid, what),
            "GPU %s (%s): %s %s; its series are left out",
            gpu.device.index,
            gpu.uuid,
            what,
            why,
        )
        if first:
            with self._unreported_lock:
                index, fields = self._unreported.setdefault(gpu.uuid, (gpu.device.index, []))
                fields.append(f"{what} ({why})")

    def report_unavailable(self) -> None:
        """One INFO line per card naming every field found unavailable since the last report."""
        with self._unreported_lock:
            unreported, self._unreported = self._unreported, {}
        for uuid, (index, fields) in unreported.items():
            LOG.info(
                "GPU %s (%s) does not support %d field(s), their series are left out: %s",
                index,
                uuid,
                len(fields),
                "; ".join(fields),
            )

    def _failed(self, gpu: Gpu, what: str, code: int) -> None:
        if code in UNAVAILABLE:
            self._unavailable(gpu, what, f"answers {error_name(self.nvml, code)}")
            return None
        if code == GPU_IS_LOST:
            self.report_lost(gpu)
            raise GpuLost(gpu.uuid) from None
        self.once.log(
            logging.WARNING,
            ("error", gpu.uuid, what, code),
            "GPU %s (%s): %s failed with %s; series left out while it fails",
            gpu.device.index,
            gpu.uuid,
            what,
            error_name(self.nvml, code),
        )
        return None

    def fail_like(self, gpu: Gpu, what: str, code: int) -> None:
        """Apply the policy to a failure NVML reported inside a successful call (a field value's
        own return code, a process-utilisation error): None, or GpuLost."""
        if what in gpu.device.unavailable:
            return None
        return self._failed(gpu, what, code)

    def log_implausible(self, gpu: Gpu, what: str, value: Any) -> None:
        """A reading equal to NVML's "not available" value, left out (logged once)."""
        self.once.log(
            logging.INFO,
            ("implausible", gpu.uuid, what),
            "GPU %s (%s): %s read %r, NVML's value for not available; series left out",
            gpu.device.index,
            gpu.uuid,
            what,
            value,
        )
