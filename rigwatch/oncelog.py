"""Logging a condition once instead of once per scrape (unsupported fields, lasting failures)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable


class OnceLog:
    """Remembers which keys were logged; each key is logged at most once per process."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def log(self, level: int, key: Hashable, message: str, *args: object) -> bool:
        """Log message unless key was logged before; returns whether it was logged."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.log(level, message, *args)
        return True
