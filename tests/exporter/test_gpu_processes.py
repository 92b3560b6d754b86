"""Per-process GPU memory and SM utilisation, named by psutil, robust to processes exiting."""

from __future__ import annotations

import os
import subprocess

import psutil

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, scrape
from tests.support import make_scenario, running_exporter, until_scenario_seen, write_scenario


def _exited_pid() -> int:
    """The pid of a process that existed and is gone (reaped) now."""
    child = subprocess.Popen(["sleep", "60"])
    child.kill()
    child.wait()
    assert not psutil.pid_exists(child.pid)
    return child.pid


def test_processes_are_named_with_owner_and_exited_ones_still_reported(scenario_file):
    me = psutil.Process(os.getpid())
    gone = _exited_pid()
    scenario = make_scenario(2)
    scenario["devices"][0]["processes"] = [
        {"pid": me.pid, "used_memory_bytes": 3 << 30, "kind": "compute", "sm_util_percent": 85},
        # The same process with a graphics context too: one series, not a duplicate.
        {"pid": me.pid, "used_memory_bytes": 1 << 30, "kind": "graphics"},
        {"pid": gone, "used_memory_bytes": 512 << 20, "kind": "compute", "sm_util_percent": 10},
    ]
    scenario["devices"][1]["processes"] = [
        {"pid": gone, "used_memory_bytes": 256 << 20, "kind": "graphics"},
        {"pid": 1, "used_memory_bytes": None, "kind": "compute"},  # memory not available
    ]
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        for _ in range(2):  # the second scrape answers from the name cache
            s = scrape(base)
            mine = s.all("rigwatch_gpu_process_memory_bytes", uuid=UUID0, pid=str(me.pid))
            assert mine == [
                (
                    {
                        "gpu": "0",
                        "uuid": UUID0,
                        "pid": str(me.pid),
                        "process": me.name(),
                        "user": me.username(),
                    },
                    3 << 30,
                )
            ]
            assert (
                s.value("rigwatch_gpu_process_sm_utilization_ratio", uuid=UUID0, pid=str(me.pid))
                == 0.85
            )
            # Exited before the lookup: reported with what NVML knows, empty name and user.
            assert s.value(
                "rigwatch_gpu_process_memory_bytes", uuid=UUID0, pid=str(gone), process="", user=""
            ) == (512 << 20)
            assert (
                s.value("rigwatch_gpu_process_sm_utilization_ratio", uuid=UUID0, pid=str(gone))
                == 0.1
            )
            assert s.value("rigwatch_gpu_process_memory_bytes", uuid=UUID1, pid=str(gone)) == (
                256 << 20
            )
            # No memory figure from NVML: no series rather than a sentinel.
            assert s.all("rigwatch_gpu_process_memory_bytes", pid="1") == []
            assert s.value("rigwatch_scrape_collector_success", collector="gpu_process") == 1


def test_a_process_that_exits_between_scrapes_leaves_no_stale_series(scenario_file):
    child = subprocess.Popen(["sleep", "60"])
    try:
        scenario = make_scenario(1)
        scenario["devices"][0]["processes"] = [{"pid": child.pid, "used_memory_bytes": 1 << 20}]
        write_scenario(scenario_file, scenario)
        with running_exporter(scenario_file, FAST_RETRY) as (_, base):
            s = scrape(base)
            assert s.value("rigwatch_gpu_process_memory_bytes", pid=str(child.pid)) == 1 << 20
            assert s.value("rigwatch_gpu_process_memory_bytes", process="sleep") == 1 << 20
            child.kill()
            child.wait()
            # NVML still lists it for a moment: still reported, never an error.
            s = scrape(base)
            assert s.value("rigwatch_gpu_process_memory_bytes", pid=str(child.pid)) == 1 << 20
            assert s.value("rigwatch_scrape_collector_success", collector="gpu_process") == 1
            scenario["devices"][0]["processes"] = []
            write_scenario(scenario_file, scenario)
            until_scenario_seen()
            assert scrape(base).all("rigwatch_gpu_process_memory_bytes") == []
    finally:
        child.kill()
        child.wait()
