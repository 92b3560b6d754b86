"""Per-process GPU memory and SM utilisation, named by psutil, robust to processes exiting."""

from __future__ import annotations

import os
import subprocess
import time

import psutil

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, scrape
from tests.support import make_scenario, running_exporter, write_scenario


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
            time.sleep(0.3)
            assert scrape(base).all("rigwatch_gpu_process_memory_bytes") == []
    finally:
        child.kill()
        child.wait()


_COMPARE_READERS = """
import json, os, sys, time
import pynvml
from exporter.collectors import gpu_process
pynvml.nvmlInit()
out = {}
for index in range(pynvml.nvmlDeviceGetCount()):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    for what in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        ours = gpu_process._process_lister(pynvml, what)(handle)
        theirs = [(p.pid, p.usedGpuMemory) for p in getattr(pynvml, what)(handle)]
        out[f"{index}/{what}"] = [ours, theirs]
    since = int((time.time() - 5) * 1e6)
    try:
        ours = gpu_process._utilization_reader(pynvml)(handle, since)
    except pynvml.NVMLError as err:
        ours = ["error", err.value]
    try:
        theirs = [(s.pid, s.timeStamp, s.smUtil) for s in
                  pynvml.nvmlDeviceGetProcessUtilization(handle, since)]
    except pynvml.NVMLError as err:
        theirs = ["error", err.value]
    out[f"{index}/utilization"] = [ours, theirs]
print(json.dumps(out))
"""


def test_direct_process_readers_match_pynvml(scenario_file):
    # The collector reads NVML's process lists without pynvml's per-entry objects; against the
    # simulated library both ways must give the same pids, memory (None = not available),
    # timestamps and SM percentages, and the same error for a card with no samples.
    import json
    import sys

    from tests.support import REPO, fake_nvml_env

    scenario = make_scenario(2)
    scenario["devices"][0]["processes"] = [
        {"pid": 4242, "used_memory_bytes": 3 << 30, "kind": "compute", "sm_util_percent": 85},
        {"pid": 4243, "used_memory_bytes": None, "kind": "compute", "sm_util_percent": 5},
        {"pid": 4242, "used_memory_bytes": 1 << 20, "kind": "graphics"},
        {"pid": 4244, "used_memory_bytes": 7, "kind": "graphics"},
    ]
    write_scenario(scenario_file, scenario)
    env = {**os.environ, **fake_nvml_env(scenario_file), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", _COMPARE_READERS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(result.stdout)
    for key, (ours, theirs) in found.items():
        if key.endswith("/utilization") and ours[0] != "error":
            # The simulated samples are stamped "now" (µs) at each call: compare the rest.
            assert all(abs(a[1] - b[1]) < 5_000_000 for a, b in zip(ours, theirs, strict=True))
            ours = [(pid, sm) for pid, _, sm in ours]
            theirs = [(pid, sm) for pid, _, sm in theirs]
        assert ours == theirs, key
    assert found["0/nvmlDeviceGetComputeRunningProcesses"][0] == [
        [4242, 3 << 30],
        [4243, None],
    ]
    assert found["0/nvmlDeviceGetGraphicsRunningProcesses"][0] == [[4242, 1 << 20], [4244, 7]]
    assert sorted((pid, sm) for pid, _, sm in found["0/utilization"][0]) == [(4242, 85), (4243, 5)]
    assert found["1/nvmlDeviceGetComputeRunningProcesses"][0] == []
    assert found["1/utilization"][0][0] == "error"
