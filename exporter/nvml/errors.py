"""What NVML's answers mean for a series: return codes, "not available" values, and the
per-field policy that turns a failed call into a left-out series, a lost card or a log line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

if TYPE_CHECKING:
    from exporter.nvml.device import Gpu

LOG = logger("exporter", "nvml")

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

    NOT_SUPPORTED / NO_PERMISSION are logged once per card and field and the function is not
    called again on this card until NVML is re-initialised. GPU_IS_LOST raises GpuLost after
    report_lost(gpu). Anything else is logged once and leaves the field out while it fails.
    """

    def __init__(self, nvml: Any, once: OnceLog, report_lost: Callable[[Gpu], None]) -> None:
        self.nvml = nvml
        self.once = once
        self.report_lost = report_lost
        self._nvml_error = nvml.NVMLError
        # Per card, the fields found unavailable and not yet said at INFO: a GeForce card
        # refuses a dozen, and one line per card says them all.
        self._unreported: dict[str, list[tuple[str, str]]] = {}
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
        """Not called again on this card until NVML is re-initialised; said once, in the card's
        next report_unavailable() line (and at debug level now)."""
        gpu.device.unavailable.add(what)
        if self.once.log(
            logging.DEBUG,
            ("unavailable", gpu.uuid, what),
            "GPU %s (%s): %s %s; its series are left out",
            gpu.device.index,
            gpu.uuid,
            what,
            why,
        ):
            with self._unreported_lock:
                self._unreported.setdefault(gpu.uuid, []).append((why, what))

    def report_unavailable(self, gpu: Gpu) -> None:
        """One INFO line naming every field the card turned out not to have since the last
        such line: at start, everything a consumer card refuses in one line."""
        with self._unreported_lock:
            found = self._unreported.pop(gpu.uuid, None)
        if found:
            by_reason: dict[str, list[str]] = {}
            for why, what in found:
                by_reason.setdefault(why, []).append(what)
            LOG.info(
                "GPU %s (%s) does not give %d field(s), whose series are left out: %s",
                gpu.device.index,
                gpu.uuid,
                len(found),
                "; ".join(f"{why}: {', '.join(whats)}" for why, whats in by_reason.items()),
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
