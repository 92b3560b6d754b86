"""Each GPU process's start time, run name and container id, from real child processes."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from exporter.collectors.runinfo import container_id, declared_user, run_name
from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, scrape
from tests.support import make_scenario, mirror_proc, running_exporter, write_scenario

DOCKER_ID = "3f4e5d6c7b8a" + "0" * 52


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-u", "/home/ann/exp/train.py", "--lr", "3e-4"], "train.py"),
        (["python3.11", "-W", "ignore", "-m", "mypkg.train", "--token", "s3cret"], "mypkg.train"),
        (
            ["python", "-m", "torch.distributed.run", "--nproc_per_node", "4", "ft.py", "-x"],
            "ft.py",
        ),
        (["/usr/bin/python3", "/usr/local/bin/torchrun", "--nnodes=1", "pre.py"], "pre.py"),
        (["/opt/venv/bin/torchrun", "--standalone", "-m", "pkg.pretrain"], "pkg.pretrain"),
        (["python3", "-c", "import torch; ..."], "python3"),
        (["python3"], "python3"),
        (["/opt/llama.cpp/llama-server", "--api-key", "s3cret"], "llama-server"),
        ([], "kworker"),
    ],
)
def test_run_name_is_the_script_or_module_never_the_arguments(argv, expected):
    process_name = {"/opt/llama.cpp/llama-server": "llama-server", "python3": "python3"}.get(
        argv[0] if argv else "", "python3" if argv else "kworker"
    )
    assert run_name(argv, process_name) == expected


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", DOCKER_ID[:12]),
        (f"12:memory:/docker/{DOCKER_ID}\n11:cpu:/docker/{DOCKER_ID}\n", DOCKER_ID[:12]),
        (f"0::/kubepods/burstable/pod1234/{DOCKER_ID}\n", DOCKER_ID[:12]),
        (f"0::/system.slice/cri-containerd-{DOCKER_ID}.scope\n", DOCKER_ID[:12]),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", ""),
        ("", ""),
    ],
)
def test_container_id_from_cgroup(cgroup, expected):
    assert container_id(cgroup) == expected


def _child(tmp_path, script: str = "train.py", *args: str) -> subprocess.Popen:
    path = tmp_path / script
    path.write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, "-u", str(path), "--secret-token", "abc", *args])


def test_start_time_and_run_name_of_real_processes_on_two_cards(scenario_file, tmp_path):
    child = _child(tmp_path)
    try:
        scenario = make_scenario(2)
        for device in scenario["devices"]:
            device["processes"] = [{"pid": child.pid, "used_memory_bytes": 2 << 30}]
        write_scenario(scenario_file, scenario)
        started = psutil.Process(child.pid).create_time()
        with running_exporter(scenario_file, FAST_RETRY) as (_, base):
            s = scrape(base)
            series = s.all("rigwatch_gpu_process_start_time_seconds", pid=str(child.pid))
            assert {labels["uuid"] for labels, _ in series} == {UUID0, UUID1}
            for labels, value in series:
                assert labels["run"] == "train.py"
                assert labels["container"] == ""
                assert labels["user"] == psutil.Process(child.pid).username()
                assert abs(value - started) < 1.0
            assert "abc" not in "".join(str(labels) for labels, _ in series)
    finally:
        child.kill()
        child.wait()


def test_full_command_line_only_behind_the_flag(scenario_file, tmp_path):
    child = _child(tmp_path)
    try:
        scenario = make_scenario(1)
        scenario["devices"][0]["processes"] = [{"pid": child.pid, "used_memory_bytes": 1 << 20}]
        write_scenario(scenario_file, scenario)
        with running_exporter(
            scenario_file, FAST_RETRY, "--collector.gpu_process.full-command-line"
        ) as (_, base):
            labels, _ = scrape(base).all("rigwatch_gpu_process_start_time_seconds")[0]
            assert labels["run"].endswith("train.py --secret-token abc")
    finally:
        child.kill()
        child.wait()


def test_reused_pid_gets_a_new_start_time_and_name(scenario_file, tmp_path):
    # Two different processes shown under one pid in turn (as a reused pid would be): the
    # start time and name follow the process, never the cache of the previous one.
    first = _child(tmp_path, "first.py")
    second = None
    try:
        scenario = make_scenario(1)
        scenario["devices"][0]["processes"] = [{"pid": first.pid, "used_memory_bytes": 1 << 20}]
        write_scenario(scenario_file, scenario)
        fake = tmp_path / "proc"
        with running_exporter(
            scenario_file, FAST_RETRY, f"--path.procfs={fake}", "--no-collector.host"
        ) as (_, base):
            mirror_proc(fake, first.pid, first.pid)
            one = scrape(base).all("rigwatch_gpu_process_start_time_seconds")
            assert [labels["run"] for labels, _ in one] == ["first.py"]
            # A pause, not a wait: the clock must pass into the next second so the second
            # process starts measurably later, as a reused pid's new process does.
            time.sleep(1.1)
            second = _child(tmp_path, "second.py")
            mirror_proc(fake, second.pid, first.pid)
            two = scrape(base).all("rigwatch_gpu_process_start_time_seconds")
            assert [labels["run"] for labels, _ in two] == ["second.py"]
            assert two[0][1] > one[0][1]
    finally:
        for child in (first, second):
            if child is not None:
                child.kill()
                child.wait()


def test_process_in_a_container_cgroup_gets_the_short_id(scenario_file, tmp_path):
    child = _child(tmp_path)
    try:
        fake = tmp_path / "proc"
        mirror_proc(fake, child.pid, child.pid, f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
        scenario = make_scenario(1)
        scenario["devices"][0]["processes"] = [{"pid": child.pid, "used_memory_bytes": 1 << 20}]
        write_scenario(scenario_file, scenario)
        with running_exporter(
            scenario_file, FAST_RETRY, f"--path.procfs={fake}", "--no-collector.host"
        ) as (_, base):
            labels, _ = scrape(base).all("rigwatch_gpu_process_start_time_seconds")[0]
            assert labels["container"] == DOCKER_ID[:12]
            assert labels["run"] == "train.py"
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("alice", "alice"), (" bob@lab ", "bob@lab"), ("two words", ""), ("", ""), (None, "")],
)
def test_rigwatch_user_of_a_real_process_and_nothing_else_of_its_environment(value, expected):
    """The one variable read from /proc/PID/environ; an implausible name is ignored, so the
    Unix user stays the run's user."""
    env = {"PATH": "/usr/bin:/bin", "API_TOKEN": "s3cret"}
    if value is not None:
        env["RIGWATCH_USER"] = value
    # It says when it runs: just after exec the kernel may not have set up its environment yet.
    code = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"up\n"
        assert declared_user("/proc", child.pid) == expected
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert declared_user("/proc", child.pid) == ""  # gone: nothing, and no error
