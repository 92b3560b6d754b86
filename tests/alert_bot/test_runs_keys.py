"""How the run watch tells runs apart: (rig, pid, start time), with a start time read again a
second off after an exporter restart still the same run, and a reused pid a new one."""

from __future__ import annotations

from alert_bot.runs.table import Run
from alert_bot.runs.watch import RunWatch


def _run(pid: int, start: float, instance: str = "rig1:10735") -> Run:
    return Run(instance, pid, start, "rig1", "train.py", "python3", "ann", "")


def test_start_time_a_second_off_is_the_same_run_and_a_reused_pid_is_not():
    known = {r.key: r for r in (_run(100, 1000.0), _run(200, 5000.0))}
    present = {
        r.key: r
        for r in (
            _run(100, 1001.0),  # the exporter restarted: boot time read one second later
            _run(200, 9000.0),  # pid 200 reused by a process started later
            _run(100, 1000.0, instance="rig2:10735"),  # another rig's pid 100
        )
    }
    matched = RunWatch._same_runs(present, known)
    assert ("rig1:10735", 100, 1000.0) in matched
    assert matched[("rig1:10735", 100, 1000.0)].start_time == 1000.0
    assert ("rig1:10735", 200, 9000.0) in matched and ("rig1:10735", 200, 5000.0) not in matched
    assert ("rig2:10735", 100, 1000.0) in matched
