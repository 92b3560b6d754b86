"""A hung NVML call costs that card's series and the collector's success, never the scrape."""

from __future__ import annotations

import os
import time

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, scrape
from tests.support import (
    make_scenario,
    running_exporter,
    until_scenario_seen,
    wait_until,
    write_scenario,
)

HANG_MS = 4000


def by_the_deadline(deadline_s: float) -> float:
    """The bound on a scrape's time that tells "answered by its deadline" from "waited for the
    hang": halfway between the two, a margin for a loaded machine that still tells them apart."""
    return (deadline_s + HANG_MS / 1000) / 2


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _timed_scrape(base: str, headers: dict | None = None):
    started = time.monotonic()
    s = scrape(base, timeout=30, headers=headers)
    return s, time.monotonic() - started


def test_hung_call_answers_by_the_deadline_and_costs_only_that_card(scenario_file):
    scenario = make_scenario(2)
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--scrape.timeout-seconds=1.5") as (
        proc,
        base,
    ):
        scrape(base)
        threads_before = _threads(proc.pid)
        scenario["devices"][1]["hang_ms"] = {"nvmlDeviceGetTemperature": HANG_MS}
        write_scenario(scenario_file, scenario)
        until_scenario_seen()

        for _ in range(4):
            s, elapsed = _timed_scrape(base)
            assert elapsed < by_the_deadline(1.5), elapsed
            assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 0
            assert s.value("rigwatch_scrape_collector_success", collector="host") == 1
            assert s.value("rigwatch_scrape_collector_success", collector="gpu_process") == 1
            assert s.value("rigwatch_scrape_collector_success", collector="xid") == 1
            # The healthy card reports everything; the hung one only its identity, at 0.
            assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
            assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 45
            assert s.value("rigwatch_gpu_up", uuid=UUID1) == 0
            assert s.value("rigwatch_gpu_info", uuid=UUID1) == 1
            assert s.all("rigwatch_gpu_power_watts", uuid=UUID1) == []
            assert s.value("rigwatch_host_memory_total_bytes") > 0
            assert s.value("rigwatch_nvml_up") == 1

        # Scrape after scrape on a call that stays hung must not pile up threads.
        assert _threads(proc.pid) <= threads_before + 3, (threads_before, _threads(proc.pid))

        scenario["devices"][1]["hang_ms"] = {}
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_scrape_collector_success", collector="gpu") == 1,
            timeout=HANG_MS / 1000 + 5,
            what="gpu collector healthy again",
        )
        assert scrape(base).value("rigwatch_gpu_up", uuid=UUID1) == 1


def _scrape_while_hung(scenario_file, timeout_flag: str, call: str, headers: dict | None = None):
    """One timed scrape while card 0's `call` hangs, on an exporter started with timeout_flag."""
    scenario = make_scenario(2)
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, timeout_flag) as (_, base):
        scrape(base)
        scenario["devices"][0]["hang_ms"] = {call: HANG_MS}
        write_scenario(scenario_file, scenario)
        until_scenario_seen()
        return _timed_scrape(base, headers)


def test_prometheus_timeout_header_lowers_the_deadline(scenario_file):
    s, elapsed = _scrape_while_hung(
        scenario_file,
        "--scrape.timeout-seconds=20",
        "nvmlDeviceGetMemoryInfo",
        {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
    )
    # Answered a bit under Prometheus's 1.5 s, not after the 4 s hang or the 20 s flag.
    assert elapsed < 1.5, elapsed
    assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 0
    assert s.value("rigwatch_gpu_up", uuid=UUID0) == 0
    assert s.value("rigwatch_gpu_up", uuid=UUID1) == 1


def test_hung_process_listing_costs_only_the_process_collector(scenario_file):
    s, elapsed = _scrape_while_hung(
        scenario_file, "--scrape.timeout-seconds=1", "nvmlDeviceGetComputeRunningProcesses"
    )
    assert elapsed < by_the_deadline(1), elapsed
    assert s.value("rigwatch_scrape_collector_success", collector="gpu_process") == 0
    assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 1
    assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
