"""The gpm collector (Hopper's profiling metrics through NVML GPM) on the simulated library:
supported and unsupported cards, the window between scrapes, a card that stops answering in
the middle of its samples, and the flag that turns it off."""

from __future__ import annotations

import pytest

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, log_lines, scrape
from tests.support import make_scenario, running_exporter, wait_until, write_scenario

# What an H200 read under a bf16 matrix-multiply loop (docs/real-gpu.md), in NVML's units:
# percent, and MiB/s for the traffic.
H200_UNDER_LOAD = {
    "graphics_util": 99.412,
    "sm_util": 95.927,
    "sm_occupancy": 14.176,
    "integer_util": 1.352,
    "any_tensor_util": 93.114,
    "hmma_tensor_util": 93.114,
    "imma_tensor_util": 0.0,
    "dfma_tensor_util": 0.0,
    "dram_bw_util": 17.269,
    "fp64_util": 0.0,
    "fp32_util": 0.0,
    "fp16_util": 0.0,
    "pcie_tx_per_sec": 4.483,
    "pcie_rx_per_sec": 12.799,
    "nvlink_total_rx_per_sec": 0.0,
    "nvlink_total_tx_per_sec": 0.0,
}


def hopper_and_older(path) -> dict:
    """Card 0 has GPM (an H200 under load), card 1 none (a GeForce)."""
    scenario = make_scenario(2)
    scenario["devices"][0].update(name="NVIDIA H200", gpm=dict(H200_UNDER_LOAD))
    write_scenario(path, scenario)
    return scenario


def gpm_scrape(base: str, uuid: str = UUID0):
    """The next scrape in which the card has its GPM series (the first only takes a sample)."""
    return wait_until(
        lambda: (
            (s := scrape(base)).value("rigwatch_gpu_sm_activity_ratio", uuid=uuid) is not None and s
        ),
        timeout=10,
        what="GPM series",
    )


def test_a_hopper_card_serves_its_profiling_metrics_and_an_older_card_none(scenario_file):
    hopper_and_older(scenario_file)
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        first = scrape(base)
        # The first scrape only takes the card's first sample: nothing to compute yet.
        assert first.all("rigwatch_gpu_sm_activity_ratio") == []
        s = gpm_scrape(base)
        output = proc.output()
    assert s.value("rigwatch_gpu_graphics_activity_ratio", uuid=UUID0) == pytest.approx(0.99412)
    assert s.value("rigwatch_gpu_sm_activity_ratio", uuid=UUID0) == pytest.approx(0.95927)
    assert s.value("rigwatch_gpu_sm_occupancy_ratio", uuid=UUID0) == pytest.approx(0.14176)
    pipes = {labels["pipe"]: v for labels, v in s.all("rigwatch_gpu_pipe_activity_ratio")}
    assert pipes == pytest.approx(
        {
            "tensor": 0.93114,
            "tensor_hmma": 0.93114,
            "tensor_imma": 0.0,
            "tensor_dfma": 0.0,
            "fp64": 0.0,
            "fp32": 0.0,
            "fp16": 0.0,
            "integer": 0.01352,
        }
    )
    assert s.value("rigwatch_gpu_dram_bandwidth_utilization_ratio", uuid=UUID0) == pytest.approx(
        0.17269
    )
    traffic = {
        labels["direction"]: v for labels, v in s.all("rigwatch_gpu_pcie_traffic_bytes_per_second")
    }
    assert traffic == pytest.approx({"tx": 4.483 * 2**20, "rx": 12.799 * 2**20})
    window = s.value("rigwatch_gpu_gpm_window_seconds", uuid=UUID0)
    assert window is not None and window >= 1.0, "two samples at least MIN_WINDOW_SECONDS apart"
    # The GeForce card: no GPM series at all, and no log line saying so.
    for family in ("rigwatch_gpu_sm_activity_ratio", "rigwatch_gpu_gpm_window_seconds"):
        assert s.all(family, uuid=UUID1) == []
    assert log_lines(output, "(?i)GPU 1.*gpm") == []
    assert s.value("rigwatch_scrape_collector_success", collector="gpm") == 1


def test_a_metric_the_card_does_not_compute_has_no_series(scenario_file):
    scenario = make_scenario(1)
    scenario["devices"][0]["gpm"] = {"sm_util": 40.0, "any_tensor_util": 2.5}
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        s = gpm_scrape(base)
    assert s.value("rigwatch_gpu_sm_activity_ratio", uuid=UUID0) == pytest.approx(0.4)
    assert [labels["pipe"] for labels, _ in s.all("rigwatch_gpu_pipe_activity_ratio")] == ["tensor"]
    assert s.all("rigwatch_gpu_dram_bandwidth_utilization_ratio") == []
    assert s.all("rigwatch_gpu_nvlink_traffic_bytes_per_second") == []


def test_scrapes_closer_than_the_minimum_window_are_served_the_last_window(scenario_file):
    hopper_and_older(scenario_file)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        s = gpm_scrape(base)
        again = scrape(base)
    # Scraped at once: the same window, not a new one of a few milliseconds.
    assert again.value("rigwatch_gpu_gpm_window_seconds", uuid=UUID0) == s.value(
        "rigwatch_gpu_gpm_window_seconds", uuid=UUID0
    )


def test_a_card_that_stops_answering_mid_sample_costs_its_own_gpm_series_only(scenario_file):
    scenario = hopper_and_older(scenario_file)
    scenario["devices"][1]["gpm"] = {"sm_util": 10.0}
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        gpm_scrape(base, UUID0)
        gpm_scrape(base, UUID1)
        # Card 0's next sample fails: its GPM series go, card 1's stay, the scrape succeeds.
        scenario["devices"][0]["errors"] = {"nvmlGpmSampleGet": "UNKNOWN"}
        write_scenario(scenario_file, scenario)
        s = wait_until(
            lambda: (
                (s := scrape(base)).all("rigwatch_gpu_sm_activity_ratio", uuid=UUID0) == [] and s
            ),
            timeout=10,
            what="card 0's GPM series to go",
        )
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 45
        assert s.value("rigwatch_gpu_sm_activity_ratio", uuid=UUID1) == pytest.approx(0.1)
        assert s.value("rigwatch_scrape_collector_success", collector="gpm") == 1
        # It answers again: a new pair of samples, and its series are back.
        scenario["devices"][0]["errors"] = {}
        write_scenario(scenario_file, scenario)
        gpm_scrape(base, UUID0)
        # Lost in the middle: the card's series go, the other card's stay.
        scenario["devices"][0]["lost"] = True
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_up", uuid=UUID0) == 0,
            timeout=10,
            what="card 0 lost",
        )
        # From the scrape after the one that found it lost, the card has no GPM unit at all.
        s = scrape(base)
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 0
        assert s.all("rigwatch_gpu_sm_activity_ratio", uuid=UUID0) == []
        assert s.value("rigwatch_gpu_sm_activity_ratio", uuid=UUID1) == pytest.approx(0.1)
        output = proc.output()
    assert len(log_lines(output, "nvmlGpmSampleGet failed with UNKNOWN")) == 1


def test_the_collector_can_be_turned_off(scenario_file):
    hopper_and_older(scenario_file)
    with running_exporter(scenario_file, FAST_RETRY, "--no-collector.gpm") as (_, base):
        scrape(base)
        s = scrape(base)
    assert s.all("rigwatch_gpu_sm_activity_ratio") == []
    assert s.value("rigwatch_scrape_collector_success", collector="gpm") is None
