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

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from exporter.nvml.device import Gpu
from exporter.nvml.errors import FieldCalls
from exporter.nvml.guard import ReadGuard
from exporter.nvml.library import NvmlUnavailable, identify, restart
from exporter.nvml.registry import CardRegistry, Unopened
from exporter.nvml.supervisor import Supervisor
from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "nvml")

# Scrape work on NVML (every card's readings and processes) shares one lane thread; see scrape.py.
NVML_LANE = "nvml"
# How long a re-initialisation waits for in-flight reads before it tries again later; a read
# stuck in a hung NVML call must not freeze every other card's reads behind it.
WRITER_WAIT_SECONDS = 2.0


class NvmlSession:
    """Owns NVML's lifecycle for the whole process; collectors read through it."""

    def __init__(self, retry_max_seconds: float = 60.0, sysfs: str | None = None) -> None:
        self.retry_max_seconds = retry_max_seconds
        self.cards = CardRegistry(sysfs)
        self.nvml: Any = None  # the pynvml module once imported
        # The per-field error policy over that module: collectors call session.call(...).
        self.calls: FieldCalls | None = None
        self.up = False
        self.reason = "not initialised yet"
        self.driver_version = ""
        self.cuda_version = ""
        self.generation = 0  # bumped by every successful (re)initialisation
        self._initialised = False
        self.device_count: int | None = None  # nvmlDeviceGetCount at the last initialisation
        self._guard = ReadGuard()
        self.once = OnceLog(LOG)
        self._supervisor = Supervisor(
            self._needs_reinit,
            lambda: self.cards.card_missing() or bool(self.cards.unopened),
            self._reinitialise,
            retry_max_seconds,
            LOG,
        )
        self.reinitialisations = 0  # attempts that ran (shutdown + init), for the logs and tests

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, wait_seconds: float = 10.0) -> None:
        """Start the supervisor and wait (bounded) for the first attempt, so that the first
        scrape already sees the cards when a driver is there."""
        self._supervisor.start(wait_seconds)

    def close(self) -> None:
        self._supervisor.stop()

    def gpus(self) -> list[Gpu]:
        return self.cards.gpus()

    @property
    def unopened(self) -> list[Unopened]:
        """The indexes NVML counts but cannot open, as of the last initialisation."""
        return self.cards.unopened

    def reading(self) -> AbstractContextManager[None]:
        """Hold off re-initialisation while handles are in use."""
        return self._guard.reading()

    def read_card(self, gpu: Gpu, read: Callable[..., Any], *args: Any) -> Any:
        """read(*args) while holding off re-initialisation; None when the card is not up or
        turns out to be lost during the read (its rigwatch_gpu_up then reads 0). During a
        re-initialisation a healthy card serves its previous readings (guard.py)."""
        answered = self.calls.report_unavailable if self.calls is not None else None
        return self._guard.read(gpu, read, args, answered)

    def report_lost(self, gpu: Gpu) -> None:
        """A call on gpu answered GPU_IS_LOST: mark it and ask for a re-initialisation."""
        if not gpu.lost:
            gpu.lost = True
            LOG.warning(
                "GPU %s (%s) is lost (GPU_IS_LOST); will re-initialise NVML to find it again",
                gpu.device.index,
                gpu.uuid,
            )
        self._supervisor.wake()

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
        if not self.up or self.cards.any_lost():
            return True
        return bool(self.cards.unidentified) and self.cards.card_missing()

    def _reinitialise(self) -> bool:
        """Shut NVML down (if it was up) and initialise it again; False if it could not run."""
        if not self._guard.acquire_write(WRITER_WAIT_SECONDS):
            return False
        self.reinitialisations += 1
        LOG.debug("NVML (re)initialisation #%d", self.reinitialisations)
        try:
            self._init_locked()
        except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any surprise
            LOG.exception("NVML initialisation failed unexpectedly")
            self._fail(f"unexpected error: {exc!r}")
        finally:
            self._guard.release_write()
        return True

    def _fail(self, reason: str) -> None:
        was_up = self.up
        self.up = False
        self.device_count = None
        self.cards.all_absent()
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
        try:
            driver = restart(self.nvml, self._initialised)
        except NvmlUnavailable as exc:
            self._initialised = exc.initialised
            self._fail(exc.reason)
            return
        self._initialised = True
        self.driver_version, self.cuda_version = driver.driver_version, driver.cuda_version
        calls, once = self.calls, self.once
        found = self.cards.update(
            driver.count,
            lambda index, failures: identify(self.nvml, calls, once, index, failures),
        )
        count = driver.count
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
                found,
            )
