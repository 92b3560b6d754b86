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
