"""The exposition itself: promtool-clean, parseable, no NaN, consistent under concurrent scrapes."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from tests.exporter.scenarios import full_scenario
from tests.exporter.scrapes import FAST_RETRY, assert_no_nan, parse, scrape
from tests.support import http_get, running_exporter, write_scenario


def _promtool_check(text: str) -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by tests/run.sh"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return (result.stdout + result.stderr).strip()


def test_output_passes_promtool_and_the_client_parser_without_nan(scenario_file):
    write_scenario(
        scenario_file,
        full_scenario(processes=[{"pid": os.getpid(), "used_memory_bytes": 1 << 30}]),
    )
    with running_exporter(scenario_file, FAST_RETRY, "--collector.pcie_throughput") as (_, base):
        status, text = http_get(base + "/metrics")
    assert status == 200
    # Clean: no errors and no lint warnings at all (promtool prints nothing then).
    assert _promtool_check(text) == ""
    s = parse(text)
    assert len(s.families) > 60
    assert_no_nan(text)
    # The dashboards and rules rely on these being counters.
    for family in ("rigwatch_gpu_energy_joules", "rigwatch_host_cpu_seconds"):
        assert s.families[family].type == "counter"


def test_output_is_promtool_clean_with_nvml_down(tmp_path, fake_nvml_dir):
    env = {"LD_LIBRARY_PATH": str(tmp_path), "FAKE_NVML_SCENARIO": str(tmp_path / "none.json")}
    with running_exporter(None, FAST_RETRY, env=env) as (_, base):
        status, text = http_get(base + "/metrics")
    assert status == 200
    assert _promtool_check(text) == ""
    assert_no_nan(text)
    assert parse(text).value("rigwatch_nvml_up") == 0


def test_concurrent_scrapes_all_succeed_and_agree(scenario_file):
    write_scenario(scenario_file, full_scenario())
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        results: list = []
        errors: list = []

        def worker() -> None:
            try:
                for _ in range(5):
                    results.append(scrape(base, timeout=30))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert len(results) == 30
    stable = {
        "rigwatch_gpu_temperature_celsius",
        "rigwatch_gpu_power_watts",
        "rigwatch_gpu_memory_used_bytes",
        "rigwatch_gpu_throttle_reason_active",
        "rigwatch_gpu_up",
    }

    def gpu_view(s) -> dict:
        return {key: value for key, value in s.samples.items() if key[0] in stable}

    first = gpu_view(results[0])
    assert len(first) == 2 * (4 + 9)
    for s in results:
        assert gpu_view(s) == first
        for collector in ("gpu", "gpu_process", "xid", "host"):
            assert s.value("rigwatch_scrape_collector_success", collector=collector) == 1


def test_text_writer_matches_prometheus_client_on_awkward_values():
    # The exporter writes the text format itself (for speed); prometheus_client's own writer is
    # the reference: both must parse to the same samples, awkward label values included.
    from prometheus_client.exposition import generate_latest

    from exporter.exposition import render
    from exporter.families import build_families, specs

    table = specs(
        ("rigwatch_test_reading", "gauge", 'Help with "quotes", a \\ backslash\nand a newline.'),
        ("rigwatch_test_events_total", "counter", "A counter."),
    )
    samples = [
        ("rigwatch_test_reading", {"process": 'py"thon\\ \n', "user": "jöé"}, 1.0),
        ("rigwatch_test_reading", {"process": "big", "user": ""}, 25_757_220_864),
        ("rigwatch_test_reading", {"process": "small", "user": "x"}, 1e-7),
        ("rigwatch_test_reading", {"process": "ratio", "user": "x"}, 0.41),
        ("rigwatch_test_reading", {"process": "huge", "user": "x"}, 1.8446744073709552e19),
        ("rigwatch_test_reading", {"process": "negative", "user": "x"}, -3.5),
        ("rigwatch_test_events_total", {}, 7),
    ]

    class Registry:
        def collect(self):
            return build_families(table, samples)

    ours = parse(render(build_families(table, samples)).decode())
    reference = parse(generate_latest(Registry()).decode())
    assert ours.samples == reference.samples
    assert {n: f.type for n, f in ours.families.items()} == {
        n: f.type for n, f in reference.families.items()
    }
    assert {n: f.documentation for n, f in ours.families.items()} == {
        n: f.documentation for n, f in reference.families.items()
    }
    assert _promtool_check(render(build_families(table, samples)).decode()) == ""
