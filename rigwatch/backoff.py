"""Exponential backoff, the one formula both programs retry with: the n-th consecutive
failure waits ``initial * factor**(n-1)``, capped at ``maximum``, optionally shortened by a
random share (jitter) so that many clients do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float
    maximum: float
    factor: float = 2.0
    jitter: float = 0.0
    """Share of each delay that may be taken off at random (0.5: between half and all of it)."""
    failures: int = field(default=0, init=False)

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (no jitter)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent first: factor**n overflows long before any real failure count.
        exponent = min(failures - 1, 64)
        return min(self.initial * self.factor**exponent, self.maximum)

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        wait = self.delay(self.failures)
        if self.jitter:
            wait *= 1.0 - random.uniform(0.0, self.jitter)
        return wait

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.failures = 0
