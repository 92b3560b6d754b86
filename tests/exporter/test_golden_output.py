"""The exporter's whole /metrics output for a fixed scenario, diffed against a golden file.

Two cards where every field is supported, one GPU process, all collectors on (pcie_throughput
too): every GPU family with NVML's units turned into base units. Host series (they describe the
machine running the test) are left out, and the few values that are not the scenario's own are
normalised: the GPU process's pid, name and user, and the collectors' durations (checked to be
non-negative first). The PCI bus is the fixture rig's (tests/exporter/sysfs_tree.py). After an
intended change, regenerate the file and review its diff:

    RIGWATCH_UPDATE_GOLDEN=1 python -m pytest tests/exporter/test_golden_output.py
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path

import psutil
import pytest

from tests.exporter.scenarios import full_scenario
from tests.exporter.scrapes import FAST_RETRY, scrape
from tests.exporter.sysfs_tree import rig_tree
from tests.support import running_exporter, write_scenario

GOLDEN = Path(__file__).with_name("golden") / "full_scenario.prom"
UPDATE = os.environ.get("RIGWATCH_UPDATE_GOLDEN") == "1"

_DURATION = re.compile(r"^(rigwatch_scrape_collector_duration_seconds\{[^}]*\}) (\S+)$")
_START = re.compile(r'^(rigwatch_gpu_process_start_time_seconds\{.*)run="[^"]*"(.*\}) (\S+)$')


def normalise(text: str, pid: int, process: str, user: str) -> str:
    """The scrape without host families, with run-dependent values replaced by placeholders."""
    lines = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("#") else line.split("{", 1)[0]
        if name.startswith("rigwatch_host_"):
            continue
        duration = _DURATION.match(line)
        if duration:
            seconds = float(duration.group(2))
            assert math.isfinite(seconds) and seconds >= 0, line
            line = f"{duration.group(1)} DURATION"
        start = _START.match(line)
        if start:
            # This test's own process: its start time and run name (how pytest was invoked).
            assert abs(float(start.group(3)) - psutil.Process(pid).create_time()) < 2, line
            line = f'{start.group(1)}run="RUN"{start.group(2)} START'
        line = line.replace(
            f'pid="{pid}",process="{process}",user="{user}"',
            'pid="PID",process="PROCESS",user="USER"',
        )
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_full_output_matches_the_golden_file(scenario_file, tmp_path):
    me = psutil.Process(os.getpid())
    process = {"pid": me.pid, "used_memory_bytes": 1 << 30, "sm_util_percent": 42}
    write_scenario(scenario_file, full_scenario(processes=[process]))
    sysfs = f"--path.sysfs={rig_tree(tmp_path / 'sys').root}"
    with running_exporter(scenario_file, FAST_RETRY, "--collector.pcie_throughput", sysfs) as (
        _,
        base,
    ):
        text = scrape(base).text
    try:
        user = me.username()
    except KeyError:  # no passwd entry (a container user): the exporter labels the uid
        user = str(me.uids().real)
    got = normalise(text, me.pid, me.name(), user)
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    want = GOLDEN.read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                fromfile=str(GOLDEN.relative_to(Path(__file__).parent)),
                tofile="scrape (normalised)",
            )
        )
        pytest.fail(
            "the exporter's output differs from the golden file; if the change is intended, "
            f"rerun with RIGWATCH_UPDATE_GOLDEN=1 and review the diff:\n{diff}",
            pytrace=False,
        )
