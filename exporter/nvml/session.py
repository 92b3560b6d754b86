"""The NVML session: loads pynvml lazily, keeps the device table, recovers from lost GPUs.

Everything about a card that does not change while the driver is loaded (identity, thresholds,
maximum clocks and link) is read once when NVML is initialised. A background supervisor
thread (re)initialises NVML with backoff whenever NVML is down or a listed card is lost, so a
driver loaded later or a card that comes back needs no restart. A card that is simply gone from
NVML's list, or one NVML counts but cannot open, is looked for again only every
--nvml.retry-max-seconds, and a re-initialisation
never costs the healthy cards their series: reads that would wait for it serve the card's
previous readings instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from exporter.nvml.device import Gpu, describe, text
from exporter.nvml.errors import LIBRARY_NOT_FOUND, FieldCalls, GpuLost, error_name
from exporter.nvml.rwlock import ReadWriteLock
from exporter.pci.bus import PciBus, attribute_unopened
from rigwatch.backoff import Backoff
from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "nvml")

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


@dataclass(frozen=True)
class Unopened:
    """An index NVML counts but cannot open, as of the last initialisation: why (NVML's error,
    e.g. "gpu_is_lost", "no_permission") and the bus id the PCI bus allows for it ("" if not)."""

    index: str
    reason: str
    pci_bus_id: str = ""


class NvmlSession:
    """Owns NVML's lifecycle for the whole process; collectors read through it."""

    def __init__(self, retry_max_seconds: float = 60.0, sysfs: str | None = None) -> None:
        self.retry_max_seconds = retry_max_seconds
        # Where to look up the bus ids of cards NVML cannot open (None: not looked up).
        self.sysfs = sysfs
        self.nvml: Any = None  # the pynvml module once imported
        # The per-field error policy over that module: collectors call session.call(...).
        self.calls: FieldCalls | None = None
        self.up = False
        self.reason = "not initialised yet"
        self.driver_version = ""
        self.cuda_version = ""
        self.generation = 0  # bumped by every successful (re)initialisation
        self._gpus: dict[str, Gpu] = {}  # by uuid, in the order first seen
        self._initialised = False
        self._unidentified = 0  # listed cards that could not be identified at the last init
        self.device_count: int | None = None  # nvmlDeviceGetCount at the last initialisation
        self.unopened: list[Unopened] = []  # replaced whole by each initialisation
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

    def report_unavailable(self) -> None:
        """Log, one line per card, the fields found unavailable since the last call."""
        if self.calls is not None:
            self.calls.report_unavailable()

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
                gpu.device.index,
                gpu.uuid,
            )
        self._wake.set()

    def call(self, gpu: Gpu, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(handle, *args) on the card under the per-field error policy (errors.FieldCalls);
        replaced by that policy's own bound method once pynvml is loaded."""
        assert self.calls is not None, "no NVML call before NVML is loaded"
        return self.calls.call(gpu, what, fn, *args)

    def log_implausible(self, gpu: Gpu, what: str, value: Any) -> None:
        assert self.calls is not None
        self.calls.log_implausible(gpu, what, value)

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
        backoff = Backoff(RETRY_INITIAL_SECONDS, self.retry_max_seconds)
        while not self._stop.is_set():
            if self._needs_reinit():
                attempted = self._reinitialise()
                self._first_attempt.set()
                if not self._needs_reinit():
                    backoff.reset()
                    continue
                # A lost card wakes the supervisor at once for the first attempt; further
                # attempts back off so a card that stays lost costs little. An attempt that
                # could not start (reads stuck in a hung call) backs off too: while it waits
                # for them it holds every other read back.
                if not attempted:
                    LOG.debug("NVML re-initialisation postponed: reads still in flight")
                self._stop.wait(backoff.next())
                self._wake.clear()
            elif self._card_missing() or self.unopened:
                # NVML answers and lists only healthy cards, but one seen before is gone from
                # the list (off the bus, unplugged), or NVML counts a card it cannot open (lost
                # before the exporter started). Only a re-initialisation can find it again,
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
        self.device_count = None
        self.unopened = []
        for gpu in self._gpus.values():
            gpu.present = False
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
            self.calls = FieldCalls(pynvml, self.once, self.report_lost)
            # The policy's own bound methods from now on: a scrape makes ~200 calls, and each
            # would otherwise pay one more Python frame.
            self.call = self.calls.call
            self.log_implausible = self.calls.log_implausible
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
            self.driver_version = text(nv.nvmlSystemGetDriverVersion())
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
        failures: dict[int, str] = {}
        for index in range(count):
            gpu = self._identify(index, failures)
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
                # Collectors hold Gpu records: the new initialisation's view replaces the old
                # one whole, and the card's identity series stay the same.
                known.device = gpu.device
                known.present = True
                known.lost = gpu.lost
        for uuid, gpu in self._gpus.items():
            if uuid not in seen:
                if gpu.present:
                    LOG.warning("GPU %s (%s) is no longer visible to NVML", gpu.device.index, uuid)
                gpu.present = False
        self.unopened = self._locate(failures, seen)
        self.device_count = count
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

    def _locate(self, failures: dict[int, str], seen: set[str]) -> list[Unopened]:
        """The cards NVML counts but cannot open, each with the bus id the PCI bus allows."""
        if not failures:
            return []
        bus_ids: dict[int, str] = {}
        if self.sysfs is not None:
            bus = PciBus(self.sysfs)
            opened = {
                int(g.device.index): g.device.pci_bus_id
                for uuid, g in self._gpus.items()
                if uuid in seen and g.device.pci_bus_id
            }
            claimed = set(opened.values())
            candidates = [
                f.bus_id
                for f in bus.gpus()
                if f.bus_id not in claimed and bus.driver(f) == "nvidia"
            ]
            bus_ids = attribute_unopened(list(failures), opened, candidates)
        return [
            Unopened(str(index), reason, bus_ids.get(index, ""))
            for index, reason in sorted(failures.items())
        ]

    def _identify(self, index: int, failures: dict[int, str]) -> Gpu | None:
        """The card at index with its static facts; None if it cannot be identified (why goes
        into failures)."""
        nv = self.nvml
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError as err:
            failures[index] = error_name(nv, err.value).lower()
            self.once.log(
                logging.WARNING,
                ("identify", index, err.value),
                "GPU index %d cannot be identified: %s",
                index,
                error_name(nv, err.value),
            )
            return None
        return describe(nv, self.calls, uuid, index, handle)
