"""The read guard of the NVML session: card reads hold off a re-initialisation, and while one
runs a healthy card's read waits only briefly, then serves that card's previous readings, so a
re-initialisation never reads as every card going down for a scrape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from exporter.nvml.device import Gpu
from exporter.nvml.errors import GpuLost
from exporter.nvml.rwlock import ReadWriteLock

# How long a card's read waits for a re-initialisation before it serves the card's previous
# readings instead. Short: the scrape deadline can be as low as 0.1 s, and a real driver's
# shutdown + init takes anything from milliseconds to seconds.
REINIT_READ_WAIT_SECONDS = 0.05
# Previous readings older than this are not served for a card during a re-initialisation (one
# that takes this long is itself a problem worth seeing): the card then reads 0.
STALE_READINGS_MAX_SECONDS = 30.0


class ReadGuard:
    """Many readers (card reads) or one writer (a re-initialisation), with each card's latest
    readings kept to serve while the writer holds NVML."""

    def __init__(self) -> None:
        self._lock = ReadWriteLock()
        # (uuid, read function) -> (monotonic time, value)
        self._last_readings: dict[tuple[str, Any], tuple[float, Any]] = {}

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock.reading():
            yield

    def acquire_write(self, timeout: float) -> bool:
        return self._lock.acquire_write(timeout)

    def release_write(self) -> None:
        self._lock.release_write()

    def read(
        self,
        gpu: Gpu,
        read: Callable[..., Any],
        args: tuple[Any, ...],
        answered: Callable[[Gpu], None] | None = None,
    ) -> Any:
        """read(*args) under the guard; None when the card is not up or is lost during the
        read; answered(gpu) after a read that answered (not after a served earlier one)."""
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
            if answered is not None:
                answered(gpu)
            return value
        finally:
            self._lock.release_read()
