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


# How tests/run.sh spreads the suite over pytest-xdist workers: file by file (a file's
# module-scoped servers start once), the longest files first (--no-loadscope-reorder hands them
# out in collection order), so no worker is left with one of them at the end while the others
# stand idle; and the files that run a private Docker engine on one worker, one after the
# other, since every private dockerd uses the default bridge (engine.py also holds a lock).
ENGINE_FILES = (
    "tests/stack/test_compose_up.py",
    "tests/stack/test_bare_metal.py",
    "tests/stack/test_bare_metal_push.py",
    "tests/stack/test_compose_push.py",
)
LONGEST_FILES = (
    *ENGINE_FILES,
    "tests/alert_bot/test_runs.py",
    "tests/alert_bot/test_chat.py",
    "tests/stack/test_quickstart.py",
    "tests/alert_bot/test_runs_chat.py",
    "tests/stack/test_stack_e2e.py",
)


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = _file_of(item.nodeid)
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the order inside each file is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = _file_of(nodeid)
            return "private Docker engine" if path in ENGINE_FILES else path

    return ByFile(config, log)
