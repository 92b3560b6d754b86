"""Flags, environment fallbacks and the HTTP endpoints besides /metrics."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.exporter.scrapes import FAST_RETRY, scrape
from tests.support import (
    REPO,
    ManagedProcess,
    free_port,
    http_get,
    inherited_environment,
    running_exporter,
    wait_for_http,
)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**inherited_environment(), **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "mentions"),
    [
        (["--no-such-flag"], None, "--no-such-flag"),
        (["--web.listen-address=nonsense"], None, "--web.listen-address"),
        (["--web.listen-address=:99999"], None, "--web.listen-address"),
        (["--collector.netdev.device-exclude=(unclosed"], None, "invalid regular expression"),
        (["--collector.filesystem.fs-types-exclude=*bad"], None, "fs-types-exclude"),
        (["--collector.xid.critical-codes=48,seventy-nine"], None, "critical-codes"),
        (["--scrape.timeout-seconds=-1"], None, "--scrape.timeout-seconds"),
        (["--log.level=chatty"], None, "--log.level"),
        ([], {"RIGWATCH_COLLECTOR_GPU": "perhaps"}, "RIGWATCH_COLLECTOR_GPU"),
        ([], {"RIGWATCH_COLLECTOR_NETDEV_DEVICE_INCLUDE": "["}, "device-include"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(args, env, mentions):
    result = _run(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rigwatch-exporter: error: ")
    assert mentions in lines[0]


def test_help_lists_every_flag_with_its_environment_variable():
    result = _run("--help")
    assert result.returncode == 0
    for flag, env in [
        ("--web.listen-address", "RIGWATCH_WEB_LISTEN_ADDRESS"),
        ("--collector.pcie_throughput", "RIGWATCH_COLLECTOR_PCIE_THROUGHPUT"),
        ("--collector.xid.critical-codes", "RIGWATCH_COLLECTOR_XID_CRITICAL_CODES"),
        ("--scrape.timeout-seconds", "RIGWATCH_SCRAPE_TIMEOUT_SECONDS"),
        ("--path.sysfs", "RIGWATCH_PATH_SYSFS"),
    ]:
        assert flag in result.stdout
        assert env in result.stdout


def test_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(f"--web.listen-address=127.0.0.1:{port}", "--no-collector.gpu")
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_fallbacks_and_flags_win_over_them(scenario_file):
    env = {
        "RIGWATCH_COLLECTOR_HOST": "false",
        "RIGWATCH_COLLECTOR_PCIE_THROUGHPUT": "true",
        "RIGWATCH_COLLECTOR_XID": "false",
    }
    with running_exporter(scenario_file, FAST_RETRY, "--collector.xid", env=env) as (_, base):
        s = scrape(base)
    assert s.value("rigwatch_scrape_collector_success", collector="pcie_throughput") == 1
    assert s.value("rigwatch_scrape_collector_success", collector="xid") == 1  # flag wins
    assert s.value("rigwatch_scrape_collector_success", collector="host") is None
    assert s.all("rigwatch_host_memory_total_bytes") == []


def test_listen_address_from_the_environment(tmp_path):
    port = free_port()
    proc = ManagedProcess(
        [sys.executable, "-m", "exporter", "--no-collector.gpu", "--no-collector.gpu_process"],
        env={"RIGWATCH_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}", "RIGWATCH_COLLECTOR_XID": "0"},
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert scrape(f"http://127.0.0.1:{port}").value("rigwatch_host_load1") is not None
    finally:
        proc.stop()


def test_landing_page_health_and_unknown_paths(scenario_file):
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        status, body = http_get(base + "/")
        assert status == 200
        assert 'href="/metrics"' in body
        assert "gpu_process" in body
        status, body = http_get(base + "/healthz")
        assert (status, body.strip()) == (200, "ok")
        status, _ = http_get(base + "/nothing-here")
        assert status == 404
