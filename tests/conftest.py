"""Fixtures shared by every part of rigwatch's suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import build_fake_nvml, make_scenario, write_scenario


@pytest.fixture(scope="session")
def fake_nvml_dir() -> Path:
    """The directory holding the simulated libnvidia-ml.so.1, built once per session."""
    return build_fake_nvml()


@pytest.fixture
def scenario_file(tmp_path: Path, fake_nvml_dir: Path) -> Path:
    """A scenario file with two idle cards; tests rewrite it with write_scenario()."""
    path = tmp_path / "scenario.json"
    write_scenario(path, make_scenario(2))
    return path


# The longest files, started first when tests/run.sh spreads files over pytest-xdist workers
# (--dist loadfile --no-loadscope-reorder hands files out in this order), so no worker is left
# with one of them at the end while the others stand idle. Longest first.
LONGEST_FILES = (
    "tests/stack/test_compose_up.py",
    "tests/alert_bot/test_runs.py",
    "tests/alert_bot/test_chat.py",
    "tests/stack/test_quickstart.py",
    "tests/alert_bot/test_runs_chat.py",
    "tests/stack/test_stack_e2e.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the order inside each file is kept
