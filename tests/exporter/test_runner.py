"""The scrape runner on its own: deadlines, single flight and stall hand-over, in-process."""

from __future__ import annotations

import threading
import time

from exporter.families import build_families, specs
from exporter.scrape import Scraper, Unit
from tests.support import wait_until

TABLE = specs(("rigwatch_test_reading", "gauge", "A test reading."))


class StubCollector:
    """Units that return one sample each; a unit listed in `blocked` waits for `release`."""

    name = "stub"

    def __init__(self, keys: list[str], blocked: set[str]) -> None:
        self.keys = keys
        self.blocked = blocked
        self.release = threading.Event()
        self.calls: dict[str, int] = {}
        self.plans = 0  # scrapes that asked for this collector's units

    def _work(self, key: str):
        self.calls[key] = self.calls.get(key, 0) + 1
        if key in self.blocked:
            self.release.wait(30)
        return [("rigwatch_test_reading", {"unit": key}, 1.0)]

    def plan(self):
        self.plans += 1
        return [Unit(key, lambda key=key: self._work(key), "shared") for key in self.keys]

    def build(self, outcomes):
        samples = [s for o in outcomes if o.done and o.value for s in o.value]
        return build_families(TABLE, samples), True

    def close(self) -> None:
        self.release.set()


def _units(families) -> set[str]:
    return {s.labels["unit"] for f in families for s in f.samples if "unit" in s.labels}


def _success(families) -> float:
    for family in families:
        for sample in family.samples:
            if sample.name == "rigwatch_scrape_collector_success":
                return sample.value
    raise AssertionError("no success sample")


def test_a_stalled_unit_costs_only_itself_and_is_never_run_twice():
    stub = StubCollector(["a", "stuck", "b", "c"], blocked={"stuck"})
    scraper = Scraper([stub], timeout_seconds=1.0)
    try:
        threads_before = threading.active_count()
        for _ in range(4):
            started = time.monotonic()
            families = scraper.collect()
            assert time.monotonic() - started < 1.5
            # Units queued behind the stuck one on the same lane still ran.
            assert _units(families) == {"a", "b", "c"}
            assert _success(families) == 0
        assert stub.calls["stuck"] == 1  # joined, never started again while stuck
        assert stub.calls["a"] == 4
        assert threading.active_count() <= threads_before + 3

        stub.release.set()
        # The released unit finishes on its lane; the next scrape after that has it all.
        families = wait_until(
            lambda: (lambda f: f if _success(f) == 1 else None)(scraper.collect()),
            timeout=10,
            what="a scrape with the released unit",
        )
        assert _units(families) == {"a", "stuck", "b", "c"}
    finally:
        scraper.close()


def test_concurrent_collects_share_one_run():
    stub = StubCollector(["slow"], blocked={"slow"})
    scraper = Scraper([stub], timeout_seconds=5.0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(scraper.collect())) for _ in range(3)]
    for thread in threads:
        thread.start()
    # All three scrapes have asked for the unit while it is blocked, then it is released.
    wait_until(
        lambda: stub.plans == 3 and stub.calls.get("slow") == 1, timeout=10, what="3 scrapes"
    )
    stub.release.set()
    for thread in threads:
        thread.join(10)
    scraper.close()
    assert len(results) == 3
    assert all(_units(families) == {"slow"} and _success(families) == 1 for families in results)
    assert stub.calls["slow"] == 1
