"""What the benches share: one percentile definition, so p50/p99 mean the same in each table,
and the repository root on sys.path, so they can use the test helpers (tests.*)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): the smallest value with at least q of the values at
    or below it, so p99 of 300 samples is the 297th smallest and p50 of 4 is the 2nd."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
