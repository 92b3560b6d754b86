"""exporter.nvml.pynvml_internals against pynvml's public calls on the simulated library."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import REPO, fake_nvml_env, make_scenario, write_scenario

_COMPARE_READERS = """
import json, os, sys, time
import pynvml
from exporter.nvml.pynvml_internals import ProcessReads
pynvml.nvmlInit()
reads = ProcessReads(pynvml)
out = {}
for index in range(pynvml.nvmlDeviceGetCount()):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    for what, lister in (("nvmlDeviceGetComputeRunningProcesses", reads.compute_processes),
                         ("nvmlDeviceGetGraphicsRunningProcesses", reads.graphics_processes)):
        ours = lister(handle)
        theirs = [(p.pid, p.usedGpuMemory) for p in getattr(pynvml, what)(handle)]
        out[f"{index}/{what}"] = [ours, theirs]
    since = int((time.time() - 5) * 1e6)
    try:
        ours = reads.utilization(handle, since)
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


def test_process_readers_match_pynvml_public_calls(scenario_file):
    # The collector reads NVML's process lists without pynvml's per-entry objects; against the
    # simulated library both ways must give the same pids, memory (None = not available),
    # timestamps and SM percentages, and the same error for a card with no samples.
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
