"""The exposition itself: promtool-clean, parseable, no NaN, consistent under concurrent scrapes."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import threading
import urllib.request

from tests.exporter.scenarios import full_scenario
from tests.exporter.scrapes import FAST_RETRY, assert_no_nan, parse, scrape
from tests.support import http_get, make_scenario, running_exporter, write_scenario


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

    from exporter.exposition import LabelSet, render
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
        # Label sets built once and reused (cards, processes) carry their own rendered text.
        ("rigwatch_test_reading", LabelSet(process='re"used\\ \n', user="jöé"), 2.0),
        ("rigwatch_test_reading", LabelSet(process="reused", user=""), 3),
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


WHOLE_SCRAPE = """
import json, sys
from prometheus_client.exposition import generate_latest
from exporter.cli import parse_settings
from exporter.collectors import create_collectors
from exporter.exposition import render
from exporter.nvml.session import NvmlSession
from exporter.scrape import Scraper

settings = parse_settings([f"--web.listen-address=127.0.0.1:{sys.argv[1]}"])
session = NvmlSession(settings.nvml_retry_max_seconds, settings.sysfs)
session.start()
scraper = Scraper(create_collectors(settings, session), settings.scrape_timeout_seconds)
families = scraper.collect()

class Registry:
    def collect(self):
        return families

ours, reference = render(families), generate_latest(Registry())
print(json.dumps({"ours": ours.decode(), "reference": reference.decode()}))
"""


def test_the_writer_matches_prometheus_client_on_a_whole_scrape(scenario_file):
    """The writer is a shortcut past generate_latest() (0.25 against 3.5 ms for 650 samples):
    on every run, a whole scrape of every collector must read the same through both."""
    import json
    import sys

    from tests.support import fake_nvml_env, free_port, inherited_environment

    write_scenario(
        scenario_file,
        full_scenario(processes=[{"pid": os.getpid(), "used_memory_bytes": 1 << 30}]),
    )
    done = subprocess.run(
        [sys.executable, "-c", WHOLE_SCRAPE, str(free_port())],
        env={**inherited_environment(), **fake_nvml_env(scenario_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    ours, reference = parse(out["ours"]), parse(out["reference"])
    assert len(ours.samples) > 100
    assert ours.samples == reference.samples
    assert {n: (f.type, f.documentation) for n, f in ours.families.items()} == {
        n: (f.type, f.documentation) for n, f in reference.families.items()
    }


def _raw_get(base: str, accept_encoding: str | None) -> tuple[dict, bytes]:
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    request = urllib.request.Request(base + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=15) as response:
        return {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_gzip_when_prometheus_asks_for_it_and_only_then(scenario_file):
    write_scenario(scenario_file, make_scenario(2))
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        zipped_headers, zipped = _raw_get(base, "gzip")
        plain_headers, plain = _raw_get(base, None)
        refused_headers, refused = _raw_get(base, "gzip;q=0, identity")
        wildcard_headers, _ = _raw_get(base, "br;q=1.0, *;q=0.5")
    assert zipped_headers.get("content-encoding") == "gzip"
    assert int(zipped_headers["content-length"]) == len(zipped)
    assert zipped_headers["vary"] == "Accept-Encoding"
    unzipped = gzip.decompress(zipped).decode()
    assert len(zipped) * 4 < len(unzipped)
    for headers in (plain_headers, refused_headers):
        assert "content-encoding" not in headers
    assert wildcard_headers.get("content-encoding") == "gzip"
    # The same scrape either way (only the timing self-metrics differ between scrapes).
    timing = "rigwatch_scrape_collector_duration_seconds"
    for body in (plain.decode(), refused.decode()):
        assert parse(body).value("rigwatch_gpu_up", gpu="1") == 1
        assert {k for k in parse(body).samples if k[0] != timing} == {
            k for k in parse(unzipped).samples if k[0] != timing
        }
