"""Settings a person mistypes: a RIGWATCH_* variable that names no flag is warned about at start
(it used to be ignored without a word), a mistyped flag gets the nearest one suggested, and
boolean variables take exactly the words docs/exporter.md lists."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from exporter.cli import parse_settings
from tests.support import REPO, inherited_environment, running_exporter, wait_until


def test_an_unknown_rigwatch_variable_is_one_warning_naming_the_nearest(scenario_file):
    env = {"RIGWATCH_WEB_LISTEN_ADRESS": ":10999", "RIGWATCH_COLLECTOR_PCIE_THROUGHPUT": "on"}
    with running_exporter(scenario_file, env=env) as (proc, _):
        wait_until(lambda: "listening on" in proc.output(), what="the start line")
        warnings = [line for line in proc.output().splitlines() if "level=WARNING" in line]
    assert len(warnings) == 1, warnings
    assert "RIGWATCH_WEB_LISTEN_ADRESS is not a rigwatch-exporter setting" in warnings[0]
    assert "did you mean RIGWATCH_WEB_LISTEN_ADDRESS?" in warnings[0]


def test_a_mistyped_flag_suggests_the_nearest():
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.listen-adress=:1", "--collector.xdi"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=inherited_environment(),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--web.listen-adress: did you mean --web.listen-address?" in lines[0]
    assert "--collector.xdi: did you mean --collector.xid?" in lines[0]


def _documented_booleans() -> tuple[list[str], list[str]]:
    text = (REPO / "docs" / "exporter.md").read_text()
    listed = re.search(r"Booleans in the environment: (.*?)\.", text, re.DOTALL).group(1)
    pairs = re.findall(r"`(\w+)/(\w+)`", listed)
    return [t for t, _ in pairs], [f for _, f in pairs]


def test_booleans_take_exactly_the_documented_words(monkeypatch):
    true_words, false_words = _documented_booleans()
    assert set(true_words) == {"true", "1", "yes", "on"}
    for word in true_words + [w.upper() for w in true_words]:
        monkeypatch.setenv("RIGWATCH_COLLECTOR_PCIE_THROUGHPUT", word)
        assert "pcie_throughput" in parse_settings([]).collectors, word
    for word in false_words + [w.title() for w in false_words]:
        monkeypatch.setenv("RIGWATCH_COLLECTOR_GPU", word)
        assert "gpu" not in parse_settings([]).collectors, word
    for word in ("enabled", "2", "y", ""):
        monkeypatch.setenv("RIGWATCH_COLLECTOR_GPU", word)
        with pytest.raises(SystemExit) as exit_info:
            parse_settings([])
        assert exit_info.value.code == 2


def test_the_landing_page_starts_with_nvml_state_card_count_and_driver(scenario_file, tmp_path):
    from tests.exporter.scrapes import FAST_RETRY
    from tests.support import http_get

    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        wait_until(lambda: "NVML: up" in http_get(base + "/")[1], what="NVML up")
        body = http_get(base + "/")[1]
    state = "NVML: up · 2 cards · driver 550.54.14 (CUDA 12.4)"
    assert state in body
    assert body.index(state) < body.index('href="/metrics"')  # first, before the links
    # No driver library at all: NVML is down, and the page says so and why.
    empty = tmp_path / "no-driver"
    empty.mkdir()
    with running_exporter(None, FAST_RETRY, env={"LD_LIBRARY_PATH": str(empty)}) as (_, base):
        assert "NVML: down (" in http_get(base + "/")[1]
    gpu_off = (
        "--no-collector.gpu",
        "--no-collector.gpu_process",
        "--no-collector.xid",
        "--no-collector.gpm",
    )
    # The pci collector asks NVML which bus ids it serves, so it counts as a GPU collector.
    with running_exporter(None, *gpu_off, "--no-collector.pci") as (_, base):
        assert "NVML: not used" in http_get(base + "/")[1]
