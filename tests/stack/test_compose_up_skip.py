"""The compose test where its engine cannot run: skipped with one line saying why, except where
it is required (.ci/run, CI=true), where that is a failure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO


def _run_without_docker(**extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RIGWATCH_REQUIRE_ENGINE")}
    env["PATH"] = "/nonexistent"  # no dockerd, debootstrap or docker-compose to be found
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/stack/test_compose_up.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="the first reason given would be root, not tools")
def test_skipped_with_the_reason_in_one_line():
    result = _run_without_docker()
    # 5: pytest collected nothing else in this run; in the whole suite the skip is not an error.
    assert result.returncode in (0, 5), result.stdout + result.stderr
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1, result.stdout
    assert "compose test not run: dockerd is not installed" in skips[0]


@pytest.mark.parametrize("required", [{"RIGWATCH_REQUIRE_ENGINE": "1"}, {"CI": "true"}])
def test_a_skip_is_a_failure_where_the_engine_is_required(required):
    result = _run_without_docker(**required)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "compose test could not run:" in result.stdout
    assert "skipped" not in result.stdout.splitlines()[-1]
