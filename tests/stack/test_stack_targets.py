"""A typo in a scrape targets file, with the real Prometheus: it counts the failed read in the
metric PrometheusTargetFileInvalid alerts on, and `promtool check config` (the check the docs'
"adding a rig" step ends with) fails on it, naming the line."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.servers import have_binary, running_prometheus
from tests.support import REPO, http_get, wait_until

pytestmark = pytest.mark.skipif(
    not (have_binary("prometheus") and have_binary("promtool")),
    reason="tests/run.sh installs Debian's prometheus",
)
BROKEN = '- targets: ["192.168.1.20:10735"]\n  labels: {rig: rig2\n'


def _read_errors(base: str) -> float:
    status, text = http_get(base + "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith("prometheus_sd_file_read_errors_total "):
            return float(line.split()[1])
    raise AssertionError("prometheus_sd_file_read_errors_total is not exported")


def test_a_broken_targets_file_is_counted_and_promtool_names_it(tmp_path):
    config_dir = tmp_path / "etc"
    shutil.copytree(REPO / "prometheus", config_dir)
    (config_dir / "targets" / "rigs.yml").write_text(BROKEN)
    check = subprocess.run(
        ["promtool", "check", "config", str(config_dir / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0
    assert "targets/*.yml" in check.stdout + check.stderr  # the glob; the log names the file
    assert "line 2" in check.stdout + check.stderr
    config = (
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: rigwatch\n    file_sd_configs:\n"
        f"      - files: ['{config_dir / 'targets' / '*.yml'}']\n        refresh_interval: 1s\n"
    )
    with running_prometheus(tmp_path, config) as base:
        wait_until(lambda: _read_errors(base) >= 2, timeout=20, what="failed reads counted")
