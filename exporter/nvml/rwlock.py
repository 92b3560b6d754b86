"""A lock for NVML's handles: many readers (scrape work, the Xid watcher) or one writer
(re-initialisation), with readers that give up on a writer that takes too long."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


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
