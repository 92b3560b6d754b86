"""StartTimes: a GPU process's start time read once per process (held by a pidfd), from real
child processes, and read every time where pidfds cannot be trusted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from exporter.collectors import gpu_process
from exporter.collectors.gpu_process import StartTimes, read_start_time
from tests.exporter.scrapes import FAST_RETRY, scrape
from tests.support import make_scenario, running_exporter, write_scenario


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def _sleepers(count: int) -> Iterator[list[subprocess.Popen]]:
    children = [subprocess.Popen(["sleep", "120"]) for _ in range(count)]
    try:
        yield children
    finally:
        for child in children:
            child.kill()
            child.wait()


def _pidfd_targets(pid: int) -> set[int]:
    """The pids that process pid holds pidfds on (the Pid: lines of its pidfds' fdinfo)."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[pidfd]":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:  # closed meanwhile
            continue
        targets.update(int(line.split()[1]) for line in info.splitlines() if line[:4] == "Pid:")
    return targets


def _procfs_of_ours(tmp_path: Path) -> Path:
    """A procfs tree whose `self` names this process (as its own /proc does) and whose stat
    files the test writes, so what a lookup reads, and whether it reads, can be seen."""
    fake = tmp_path / "proc"
    fake.mkdir()
    (fake / "self").symlink_to(str(os.getpid()))
    return fake


def _write_stat(fake: Path, pid: int, start: bytes) -> None:
    # The real stat line of pid with field 22 (starttime) replaced.
    head, _, tail = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b") ")
    fields = tail.split(b" ")
    fields[19] = start
    (fake / str(pid)).mkdir(exist_ok=True)
    (fake / str(pid) / "stat").write_bytes(head + b") " + b" ".join(fields))


def _before_and_after_a_rewrite(
    starts: StartTimes, fake: Path, pid: int
) -> tuple[bytes | None, bytes | None]:
    """What starts answers for pid with its stat saying 1000, then with it rewritten to 2000."""
    _write_stat(fake, pid, b"1000")
    first = starts(pid)
    _write_stat(fake, pid, b"2000")
    return first, starts(pid)


def test_own_proc_holds_a_pidfd_and_answers_the_real_start_time():
    starts = StartTimes("/proc", threading.Lock())
    before = _open_fds()
    with _sleepers(1) as (child,):
        expected = read_start_time("/proc", child.pid)
        assert expected is not None and expected.isdigit()
        assert starts(child.pid) == expected
        assert starts(child.pid) == expected
        assert starts.held() == 1
        assert _open_fds() == before + 1
    # Exited and reaped: the fd is found readable, closed, and the pid read afresh (gone).
    assert starts(child.pid) is None
    assert starts.held() == 0
    assert _open_fds() == before


def test_a_held_pid_is_not_read_again_until_its_process_exits(tmp_path):
    fake = _procfs_of_ours(tmp_path)
    starts = StartTimes(str(fake), threading.Lock())
    with _sleepers(1) as (child,):
        # While the process lives its start time cannot change: no read, so the rewritten
        # file is not seen.
        assert _before_and_after_a_rewrite(starts, fake, child.pid) == (b"1000", b"1000")
        assert starts.held() == 1
    # The process exited: whatever now has its pid is read afresh.
    assert starts(child.pid) == b"2000"
    assert starts.held() == 0


def test_open_fds_do_not_grow_over_many_short_lived_processes(monkeypatch):
    monkeypatch.setattr(gpu_process, "PIDFD_LIMIT", 8)
    starts = StartTimes("/proc", threading.Lock())
    before = _open_fds()
    for _ in range(5):
        with _sleepers(12) as children:
            expected = {child.pid: read_start_time("/proc", child.pid) for child in children}
            for _ in range(3):
                assert {pid: starts(pid) for pid in expected} == expected
            # Eight held, the four past the limit read each time.
            assert starts.held() == 8
            assert _open_fds() == before + 8
        for pid in expected:
            assert starts(pid) is None
        assert starts.held() == 0
        assert _open_fds() == before


def test_a_process_no_longer_looked_up_is_let_go_by_the_sweep():
    starts = StartTimes("/proc", threading.Lock())
    starts.sweep_seconds = 0.0
    before = _open_fds()
    with _sleepers(2) as (staying, leaving):
        starts(staying.pid)
        starts(leaving.pid)
        starts.sweep()  # both were looked up since the start
        assert starts.held() == 2
        starts(staying.pid)  # `leaving` has left the GPU but still runs
        starts.sweep()
        assert starts.held() == 1
        assert _open_fds() == before + 1
        starts.close()
        assert _open_fds() == before
        # Closed: lookups still answer, from /proc each time.
        assert starts(staying.pid) == read_start_time("/proc", staying.pid)
        assert starts.held() == 0
        assert _open_fds() == before


def test_a_procfs_of_another_pid_namespace_is_read_every_time(tmp_path):
    # A host's procfs mounted into a container of its own pid namespace: its `self` is not
    # this process, so its pids cannot be opened as pidfds here.
    fake = tmp_path / "proc"
    fake.mkdir()
    (fake / "self").symlink_to("1")
    starts = StartTimes(str(fake), threading.Lock())
    before = _open_fds()
    with _sleepers(1) as (child,):
        assert _before_and_after_a_rewrite(starts, fake, child.pid) == (b"1000", b"2000")
        assert starts.held() == 0
        assert _open_fds() == before


def test_kernel_without_pidfds_falls_back_to_reading(monkeypatch):
    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")  # ENOSYS

    monkeypatch.setattr(os, "pidfd_open", refused)
    starts = StartTimes("/proc", threading.Lock())
    with _sleepers(1) as (child,):
        expected = read_start_time("/proc", child.pid)
        assert starts(child.pid) == expected
        assert starts(child.pid) == expected
        assert starts.held() == 0


def test_the_exporter_holds_pidfds_on_its_gpu_processes_and_closes_them_on_exit(scenario_file):
    with _sleepers(3) as children:
        pids = {child.pid for child in children}
        scenario = make_scenario(1)
        scenario["devices"][0]["processes"] = [
            {"pid": pid, "used_memory_bytes": 1 << 20} for pid in sorted(pids)
        ]
        write_scenario(scenario_file, scenario)
        with running_exporter(scenario_file, FAST_RETRY, "--no-collector.host") as (proc, base):
            first = scrape(base).all("rigwatch_gpu_process_start_time_seconds")
            assert {int(labels["pid"]) for labels, _ in first} == pids
            assert _pidfd_targets(proc.proc.pid) == pids
            for child in children:
                child.kill()
                child.wait()
            # NVML still lists them (as it can for a moment after an exit): the scrape finds
            # their fds readable, closes them, and reads /proc, where they are gone.
            assert scrape(base).all("rigwatch_gpu_process_start_time_seconds") == []
            assert _pidfd_targets(proc.proc.pid) == set()
