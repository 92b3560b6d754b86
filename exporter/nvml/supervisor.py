"""The NVML session's supervisor thread: (re)initialises NVML with backoff whenever the session
says it is needed, looks for a missing or unopened card only at the longest interval, and
sleeps otherwise until a lost card wakes it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rigwatch.backoff import Backoff

RETRY_INITIAL_SECONDS = 1.0


class Supervisor:
    """One daemon thread; the session tells it what is needed through three callables."""

    def __init__(
        self,
        needs_reinit: Callable[[], bool],
        something_missing: Callable[[], bool],
        reinitialise: Callable[[], bool],
        retry_max_seconds: float,
        log: logging.Logger,
    ) -> None:
        self._needs_reinit = needs_reinit
        self._something_missing = something_missing
        self._reinitialise = reinitialise
        self.retry_max_seconds = retry_max_seconds
        self._log = log
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait_seconds: float) -> None:
        """Start the thread and wait (bounded) for its first attempt."""
        self._thread = threading.Thread(target=self._run, name="nvml-supervisor", daemon=True)
        self._thread.start()
        self._first_attempt.wait(wait_seconds)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
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
                    self._log.debug("NVML re-initialisation postponed: reads still in flight")
                self._stop.wait(backoff.next())
                self._wake.clear()
            elif self._something_missing():
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
