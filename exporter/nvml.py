"""The NVML session: loads pynvml lazily, keeps the device table, recovers from lost GPUs.

Everything about a card that does not change while the driver is loaded (identity, thresholds,
maximum clocks and link) is read once when NVML is initialised. A background supervisor
thread (re)initialises NVML with backoff whenever NVML is down or a listed card is lost, so a
driver loaded later or a card that comes back needs no restart. A card that is simply gone from
NVML's list is looked for again only every --nvml.retry-max-seconds, and a re-initialisation
never costs the healthy cards their series: reads that would wait for it serve the card's
previous readings instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from exporter.exposition import LabelSet
from exporter.oncelog import OnceLog

LOG = logging.getLogger("rigwatch.exporter.nvml")

# NVML return codes (nvml.h); kept here so nothing needs pynvml before it is loaded.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
NOT_FOUND = 6
# A field answering one of these is simply not available on this card (or to this user).
UNAVAILABLE = frozenset({NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND})

# What NVML writes into an unsigned field it cannot fill (NVML_VALUE_NOT_AVAILABLE as uint and
# unsigned long long, and the signed -1 seen through a 32-bit int). Exporting them would put
# 4294967295 °C or 1.8e19 bytes on a dashboard; readings equal to them are left out instead.
NOT_AVAILABLE_VALUES = frozenset({0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFF})
# nvmlPstates_t: 0..15 are P0..P15; NVML_PSTATE_UNKNOWN (32) means no P-state.
PSTATE_MAX = 15
# The most fans one card has; a larger count is a bad answer, not a card with 4e9 fans.
FAN_COUNT_MAX = 16

CLOCK_TYPES = (("graphics", 0), ("sm", 1), ("memory", 2), ("video", 3))
RETRY_INITIAL_SECONDS = 1.0
# Scrape work on NVML (every card's readings and processes) shares one lane thread; see scrape.py.
NVML_LANE = "nvml"
# How long a re-initialisation waits for in-flight reads before it tries again later; a read
# stuck in a hung NVML call must not freeze every other card's reads behind it.
WRITER_WAIT_SECONDS = 2.0
# How long a card's read waits for a re-initialisation before it serves the card's previous
# readings instead. Short: the scrape deadline can be as low as 0.1 s, and a real driver's
# shutdown + init takes anything from milliseconds to seconds.
REINIT_READ_WAIT_SECONDS = 0.05
# Previous readings older than this are not served for a card during a re-initialisation (one
# that takes this long is itself a problem worth seeing): the card then reads 0.
STALE_READINGS_MAX_SECONDS = 30.0


class GpuLost(Exception):
    """A call on the card answered GPU_IS_LOST."""


def plausible(value: Any) -> bool:
    """False for NVML's "not available" values, negative numbers (unsigned fields), NaN and
    infinity (double-valued fields)."""
    return 0 <= value < 0xFFFFFFFFFFFFFFFF and value not in NOT_AVAILABLE_VALUES


def error_name(nvml: Any, code: int) -> str:
    for key, value in vars(nvml).items():
        if key.startswith("NVML_ERROR_") and value == code:
            return key[len("NVML_ERROR_") :]
    return f"error {code}"


class ReadWriteLock:
    """Many readers (scrape work, the Xid watcher) or one writer (re-initialisation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writer_waiting = False
        self._writer_since = 0.0  # when the current writer started waiting

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writer_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            self.release_read()

    def try_acquire_read(self, patience: float) -> bool:
        """Read access, waiting for a writer at most until `patience` seconds after that writer
        began; False when it is still at work then. Every reader that arrives later answers
        False at once, so a queue of reads costs the patience once, not once per read."""
        cond = self._cond
        with cond:
            while self._writer or self._writer_waiting:
                remaining = self._writer_since + patience - time.monotonic()
                if remaining <= 0:
                    return False
                cond.wait(remaining)
            self._readers += 1
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._writer or self._writer_waiting:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    return False
            self._writer_waiting = True
            self._writer_since = time.monotonic()
            while self._readers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._writer_waiting = False
                    self._cond.notify_all()
                    return False
                self._cond.wait(remaining)
            self._writer_waiting = False
            self._writer = True
            return True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


@dataclass(eq=False)
class Gpu:
    """One card seen since start. Kept (with present=False) when it disappears."""

    uuid: str
    index: str
    name: str
    pci_bus_id: str
    handle: Any = None
    present: bool = True
    lost: bool = False
    slowdown_celsius: float | None = None
    shutdown_celsius: float | None = None
    memory_max_celsius: float | None = None
    max_clocks_hertz: dict[str, float] = field(default_factory=dict)
    max_pcie_generation: int | None = None
    max_pcie_width: int | None = None
    fan_count: int | None = None
    # Functions that answered NOT_SUPPORTED/NO_PERMISSION: not called again until re-init.
    unavailable: set[str] = field(default_factory=set)
    # Label sets by their extra labels, built once: a scrape asks for ~45 per card. Replaced
    # (emptied) at every re-initialisation, which is when the index can change.
    label_sets: dict[tuple[tuple[str, str], ...], LabelSet] = field(
        default_factory=dict, repr=False
    )
    # Samples of the static facts above (thresholds, maximum clocks and link), built by the
    # gpu collector on first use after each re-initialisation.
    static_samples: list[tuple[str, LabelSet, float]] | None = field(default=None, repr=False)

    @property
    def up(self) -> bool:
        return self.present and not self.lost and self.handle is not None

    @property
    def labels(self) -> LabelSet:
        """{"gpu": index, "uuid": uuid}, shared: never modify it."""
        return self.labels_with()

    def labels_with(self, **extra: str) -> LabelSet:
        """The card's labels plus extra, built once per combination; never modify it."""
        return self.labels_for(tuple(extra.items()))

    def labels_for(self, extra: tuple[tuple[str, str], ...]) -> LabelSet:
        """labels_with() for extra labels given as a (name, value) tuple built beforehand."""
        labels = self.label_sets.get(extra)
        if labels is None:
            labels = LabelSet(gpu=self.index, uuid=self.uuid, **dict(extra))
            self.label_sets[extra] = labels
        return labels


class NvmlSession:
    """Owns NVML's lifecycle for the whole process; collectors read through it."""

    def __init__(self, retry_max_seconds: float = 60.0) -> None:
        self.retry_max_seconds = retry_max_seconds
        self.nvml: Any = None  # the pynvml module once imported
        self.up = False
        self.reason = "not initialised yet"
        self.driver_version = ""
        self.cuda_version = ""
        self.generation = 0  # bumped by every successful (re)initialisation
        self._gpus: dict[str, Gpu] = {}  # by uuid, in the order first seen
        self._initialised = False
        self._unidentified = 0  # listed cards that could not be identified at the last init
        self._lock = ReadWriteLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self.once = OnceLog(LOG)
        self._thread: threading.Thread | None = None
        # (uuid, read function) -> (monotonic time, value): each card's latest readings, served
        # while a re-initialisation holds NVML.
        self._last_readings: dict[tuple[str, Any], tuple[float, Any]] = {}
        self.reinitialisations = 0  # attempts that ran (shutdown + init), for the logs and tests

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, wait_seconds: float = 10.0) -> None:
        """Start the supervisor and wait (bounded) for the first attempt, so that the first
        scrape already sees the cards when a driver is there."""
        self._thread = threading.Thread(target=self._supervise, name="nvml-supervisor", daemon=True)
        self._thread.start()
        self._first_attempt.wait(wait_seconds)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def gpus(self) -> list[Gpu]:
        return list(self._gpus.values())

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold off re-initialisation while handles are in use."""
        with self._lock.reading():
            yield

    def read_card(self, gpu: Gpu, read: Callable[..., Any], *args: Any) -> Any:
        """read(*args) while holding off re-initialisation; None when the card is not up or
        turns out to be lost during the read (its rigwatch_gpu_up then reads 0).

        While NVML is being re-initialised (another card is lost or gone), a healthy card's
        read waits for it only briefly, then answers the card's previous readings: a
        re-initialisation must not read as every card going down for a scrape."""
        key = (gpu.uuid, read)
        if not self._lock.try_acquire_read(REINIT_READ_WAIT_SECONDS):
            last = self._last_readings.get(key)
            if last is None or not gpu.up:
                return None
            read_at, value = last
            return value if time.monotonic() - read_at <= STALE_READINGS_MAX_SECONDS else None
        try:
            if not gpu.up:
                return None
            try:
                value = read(*args)
            except GpuLost:
                self._last_readings.pop(key, None)
                return None
            self._last_readings[key] = (time.monotonic(), value)
            return value
        finally:
            self._lock.release_read()

    def report_lost(self, gpu: Gpu) -> None:
        """A call on gpu answered GPU_IS_LOST: mark it and ask for a re-initialisation."""
        if not gpu.lost:
            gpu.lost = True
            LOG.warning(
                "GPU %s (%s) is lost (GPU_IS_LOST); will re-initialise NVML to find it again",
                gpu.index,
                gpu.uuid,
            )
        self._wake.set()

    # --- calls with per-field error policy -------------------------------------------------

    def call(self, gpu: Gpu, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(gpu.handle, *args); None when the field is unavailable on this card.

        NOT_SUPPORTED / NO_PERMISSION are logged once per card and field and the function is
        not called again on this card until NVML is re-initialised. GPU_IS_LOST raises GpuLost.
        """
        if what in gpu.unavailable:
            return None
        try:
            return fn(gpu.handle, *args)
        except self.nvml.NVMLError as err:
            code = err.value
            if code in UNAVAILABLE:
                gpu.unavailable.add(what)
                self.once.log(
                    logging.INFO,
                    ("unavailable", gpu.uuid, what),
                    "GPU %s (%s): %s answers %s; its series are left out",
                    gpu.index,
                    gpu.uuid,
                    what,
                    error_name(self.nvml, code),
                )
                return None
            if code == GPU_IS_LOST:
                self.report_lost(gpu)
                raise GpuLost(gpu.uuid) from None
            self.once.log(
                logging.WARNING,
                ("error", gpu.uuid, what, code),
                "GPU %s (%s): %s failed with %s; series left out while it fails",
                gpu.index,
                gpu.uuid,
                what,
                error_name(self.nvml, code),
            )
            return None
        except Exception as err:
            # pynvml raises this (not an NVMLError) when a driver older than the binding lacks
            # a function's current version: the field is as unavailable as NOT_SUPPORTED.
            if err.__class__.__name__ != "NVMLLibraryMismatchError":
                raise
            gpu.unavailable.add(what)
            self.once.log(
                logging.INFO,
                ("unavailable", gpu.uuid, what),
                "GPU %s (%s): %s is missing from this driver; its series are left out",
                gpu.index,
                gpu.uuid,
                what,
            )
            return None

    # --- supervisor -----------------------------------------------------------------------

    def _needs_reinit(self) -> bool:
        """NVML is down, a listed card is lost, or a card seen before is missing while NVML
        lists a card it cannot identify (most likely that one, lost)."""
        if not self.up:
            return True
        if any(g.present and not g.up for g in self._gpus.values()):
            return True
        return bool(self._unidentified) and self._card_missing()

    def _card_missing(self) -> bool:
        """A card seen since start is absent from NVML's list, the listed ones all healthy."""
        return any(not g.present for g in self._gpus.values())

    def _supervise(self) -> None:
        backoff = RETRY_INITIAL_SECONDS
        while not self._stop.is_set():
            if self._needs_reinit():
                attempted = self._reinitialise()
                self._first_attempt.set()
                if not self._needs_reinit():
                    backoff = RETRY_INITIAL_SECONDS
                    continue
                # A lost card wakes the supervisor at once for the first attempt; further
                # attempts back off so a card that stays lost costs little. An attempt that
                # could not start (reads stuck in a hung call) backs off too: while it waits
                # for them it holds every other read back.
                if not attempted:
                    LOG.debug("NVML re-initialisation postponed: reads still in flight")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_seconds)
                self._wake.clear()
            elif self._card_missing():
                # NVML answers and lists only healthy cards, but one seen before is gone from
                # the list (off the bus, unplugged). Only a re-initialisation can find it again,
                # and each one stops NVML for every card, so look for it at the longest
                # interval only; a listed card turning lost meanwhile wakes this at once.
                self._first_attempt.set()
                if self._wake.wait(self.retry_max_seconds):
                    self._wake.clear()
                    continue
                if not self._stop.is_set():
                    self._reinitialise()
            else:
                self._first_attempt.set()
                self._wake.wait()
                self._wake.clear()

    def _reinitialise(self) -> bool:
        """Shut NVML down (if it was up) and initialise it again; False if it could not run."""
        if not self._lock.acquire_write(WRITER_WAIT_SECONDS):
            return False
        self.reinitialisations += 1
        LOG.debug("NVML (re)initialisation #%d", self.reinitialisations)
        try:
            self._init_locked()
        except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any surprise
            LOG.exception("NVML initialisation failed unexpectedly")
            self._fail(f"unexpected error: {exc!r}")
        finally:
            self._lock.release_write()
        return True

    def _fail(self, reason: str) -> None:
        was_up = self.up
        self.up = False
        for gpu in self._gpus.values():
            gpu.present = False
            gpu.handle = None
        if self.reason != reason or was_up:
            LOG.warning(
                "NVML unavailable: %s; serving host metrics, retrying in the background", reason
            )
        else:
            LOG.debug("NVML still unavailable: %s", reason)
        self.reason = reason

    def _init_locked(self) -> None:
        if self.nvml is None:
            try:
                import pynvml  # heavy (ctypes structures); loaded once, off the startup path
            except ImportError as err:
                self._fail(f"pynvml is not installed ({err})")
                return
            self.nvml = pynvml
        nv = self.nvml
        if self._initialised:
            with suppress(nv.NVMLError):
                nv.nvmlShutdown()
            self._initialised = False
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            name = error_name(nv, err.value)
            hint = " (no libnvidia-ml.so.1 found)" if err.value == LIBRARY_NOT_FOUND else ""
            self._fail(f"nvmlInit failed: {name}{hint}")
            return
        self._initialised = True
        try:
            count = nv.nvmlDeviceGetCount()
            self.driver_version = _text(nv.nvmlSystemGetDriverVersion())
            try:
                cuda = nv.nvmlSystemGetCudaDriverVersion()
                self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
            except nv.NVMLError:
                self.cuda_version = ""
        except nv.NVMLError as err:
            self._fail(f"NVML query failed after init: {error_name(nv, err.value)}")
            return
        if count == 0:
            self._fail("NVML found no GPUs")
            return

        seen: set[str] = set()
        self._unidentified = 0
        for index in range(count):
            gpu = self._describe(index)
            if gpu is None:
                # Listed but not answering (GPU_IS_LOST on its handle): when a known card is
                # missing, that is a lost card, retried on the short backoff.
                self._unidentified += 1
                continue
            if gpu.uuid in seen:
                continue
            seen.add(gpu.uuid)
            known = self._gpus.get(gpu.uuid)
            if known is None:
                self._gpus[gpu.uuid] = gpu
            else:
                # Update in place: collectors hold Gpu objects; identity series stay the same.
                for name in (
                    "index",
                    "name",
                    "pci_bus_id",
                    "handle",
                    "slowdown_celsius",
                    "shutdown_celsius",
                    "memory_max_celsius",
                    "max_clocks_hertz",
                    "max_pcie_generation",
                    "max_pcie_width",
                    "fan_count",
                    "unavailable",
                    "label_sets",
                    "static_samples",
                ):
                    setattr(known, name, getattr(gpu, name))
                known.present = True
                known.lost = gpu.lost
        for uuid, gpu in self._gpus.items():
            if uuid not in seen:
                if gpu.present:
                    LOG.warning("GPU %s (%s) is no longer visible to NVML", gpu.index, uuid)
                gpu.present = False
                gpu.handle = None
        was_up = self.up
        self.generation += 1
        self.up = True
        self.reason = ""
        if not was_up:
            LOG.info(
                "NVML initialised: driver %s, CUDA %s, %d GPU(s)",
                self.driver_version,
                self.cuda_version,
                len(seen),
            )

    def _describe(self, index: int) -> Gpu | None:
        """Identity and static facts of the card at index; None if it cannot be identified."""
        nv = self.nvml
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError as err:
            self.once.log(
                logging.WARNING,
                ("identify", index, err.value),
                "GPU index %d cannot be identified: %s",
                index,
                error_name(nv, err.value),
            )
            return None
        gpu = Gpu(uuid=uuid, index=str(index), name="", pci_bus_id="", handle=handle)
        try:
            gpu.name = _text(self.call(gpu, "nvmlDeviceGetName", nv.nvmlDeviceGetName) or "")
            pci = self.call(gpu, "nvmlDeviceGetPciInfo", nv.nvmlDeviceGetPciInfo)
            gpu.pci_bus_id = _text(pci.busId) if pci is not None else ""
            gpu.shutdown_celsius = self.call(
                gpu,
                "nvmlDeviceGetTemperatureThreshold(SHUTDOWN)",
                nv.nvmlDeviceGetTemperatureThreshold,
                nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
            )
            gpu.slowdown_celsius = self.call(
                gpu,
                "nvmlDeviceGetTemperatureThreshold(SLOWDOWN)",
                nv.nvmlDeviceGetTemperatureThreshold,
                nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
            )
            gpu.memory_max_celsius = self.call(
                gpu,
                "nvmlDeviceGetTemperatureThreshold(MEM_MAX)",
                nv.nvmlDeviceGetTemperatureThreshold,
                nv.NVML_TEMPERATURE_THRESHOLD_MEM_MAX,
            )
            for clock, clock_type in CLOCK_TYPES:
                mhz = self.call(
                    gpu,
                    f"nvmlDeviceGetMaxClockInfo({clock})",
                    nv.nvmlDeviceGetMaxClockInfo,
                    clock_type,
                )
                if self._static_ok(gpu, f"nvmlDeviceGetMaxClockInfo({clock})", mhz):
                    gpu.max_clocks_hertz[clock] = mhz * 1e6
            gpu.max_pcie_generation = self.call(
                gpu, "nvmlDeviceGetMaxPcieLinkGeneration", nv.nvmlDeviceGetMaxPcieLinkGeneration
            )
            gpu.max_pcie_width = self.call(
                gpu, "nvmlDeviceGetMaxPcieLinkWidth", nv.nvmlDeviceGetMaxPcieLinkWidth
            )
            gpu.fan_count = self.call(gpu, "nvmlDeviceGetNumFans", nv.nvmlDeviceGetNumFans)
        except GpuLost:
            gpu.lost = True
        # A threshold, maximum or count of 0 is a card that does not really report it: a 0 °C
        # slowdown threshold would make every temperature alert fire.
        for attribute, what in (
            ("slowdown_celsius", "nvmlDeviceGetTemperatureThreshold(SLOWDOWN)"),
            ("shutdown_celsius", "nvmlDeviceGetTemperatureThreshold(SHUTDOWN)"),
            ("memory_max_celsius", "nvmlDeviceGetTemperatureThreshold(MEM_MAX)"),
            ("max_pcie_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),
            ("max_pcie_width", "nvmlDeviceGetMaxPcieLinkWidth"),
        ):
            if not self._static_ok(gpu, what, getattr(gpu, attribute)):
                setattr(gpu, attribute, None)
        if gpu.fan_count is not None and not 0 <= gpu.fan_count <= FAN_COUNT_MAX:
            self.log_implausible(gpu, "nvmlDeviceGetNumFans", gpu.fan_count)
            gpu.fan_count = None
        return gpu

    def _static_ok(self, gpu: Gpu, what: str, value: Any) -> bool:
        """Whether a static fact read at init is usable (present, positive, not a sentinel)."""
        if value is None:
            return False
        if value > 0 and plausible(value):
            return True
        self.log_implausible(gpu, what, value)
        return False

    def log_implausible(self, gpu: Gpu, what: str, value: Any) -> None:
        self.once.log(
            logging.INFO,
            ("implausible", gpu.uuid, what),
            "GPU %s (%s): %s read %r, NVML's value for not available; series left out",
            gpu.index,
            gpu.uuid,
            what,
            value,
        )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
