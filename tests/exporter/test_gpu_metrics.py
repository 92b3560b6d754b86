"""GPU families from the simulated NVML: unsupported and not-available fields, static facts,
changes between scrapes. Every family's values in base units are in test_golden_output.py."""

from __future__ import annotations

import os
import re

from tests.exporter.scenarios import full_scenario
from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, log_lines, scrape
from tests.support import make_scenario, running_exporter, wait_until, write_scenario


def _up_without(s, labels: dict[str, str], *names: str) -> None:
    """The card of labels is up and has no series of these names (what NVML could not read)."""
    assert s.value("rigwatch_gpu_up", **labels) == 1
    for name in names:
        assert s.all(name, **labels) == [], name


def test_pcie_throughput_is_off_by_default(scenario_file):
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        s = scrape(base)
    assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
    assert not s.all("rigwatch_gpu_pcie_throughput_bytes_per_second")
    assert s.value("rigwatch_scrape_collector_success", collector="pcie_throughput") is None


def test_unsupported_fields_have_no_series_not_zero_or_nan(scenario_file):
    scenario = make_scenario(2)
    card = scenario["devices"][1]
    for field in (
        "temperature_c",
        "memory_temperature_c",
        "power_mw",
        "energy_mj",
        "encoder_percent",
        "pstate",
        "clock_event_reasons",
        "ecc",
        "remapped_rows",
    ):
        card[field] = None
    card["fan_speeds_percent"] = [None, 70]
    card["clocks_mhz"] = {"graphics": 1000, "sm": None, "memory": 5000, "video": None}
    card["pcie"] = {
        "gen": None,
        "max_gen": 4,
        "width": 16,
        "max_width": None,
        "replay_counter": None,
    }
    card["errors"] = {"nvmlDeviceGetEnforcedPowerLimit": "NO_PERMISSION"}
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        s = scrape(base)
    g1 = {"uuid": UUID1}
    _up_without(
        s,
        g1,
        "rigwatch_gpu_temperature_celsius",
        "rigwatch_gpu_memory_temperature_celsius",
        "rigwatch_gpu_memory_temperature_threshold_celsius",
        "rigwatch_gpu_power_watts",
        "rigwatch_gpu_power_limit_watts",
        "rigwatch_gpu_energy_joules_total",
        "rigwatch_gpu_encoder_utilization_ratio",
        "rigwatch_gpu_pstate",
        "rigwatch_gpu_throttle_reason_active",
        "rigwatch_gpu_ecc_errors_total",
        "rigwatch_gpu_remapped_rows",
        "rigwatch_gpu_remapped_rows_pending",
        "rigwatch_gpu_pcie_link_generation",
        "rigwatch_gpu_pcie_link_max_width",
        "rigwatch_gpu_pcie_replay_errors_total",
    )
    # The other card still reports it (where its scenario supports it).
    assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 45
    assert [labels["fan"] for labels, _ in s.all("rigwatch_gpu_fan_speed_ratio", **g1)] == ["1"]
    assert sorted(labels["clock"] for labels, _ in s.all("rigwatch_gpu_clock_hertz", **g1)) == [
        "graphics",
        "memory",
    ]
    assert s.value("rigwatch_gpu_decoder_utilization_ratio", **g1) == 0
    assert s.value("rigwatch_gpu_pcie_link_width", **g1) == 16
    assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 1


def test_unsupported_field_is_logged_once_per_card(scenario_file):
    scenario = make_scenario(2)
    for device in scenario["devices"]:
        device["power_mw"] = None
    scenario["devices"][1]["errors"] = {"nvmlDeviceGetPcieReplayCounter": "NO_PERMISSION"}
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        for _ in range(5):
            scrape(base)
        output = proc.output()
    # One summary line per card (not per scrape, not per field) names each field once.
    power = log_lines(output, re.escape("nvmlDeviceGetPowerUsage (answers NOT_SUPPORTED)"))
    assert len(power) == 2, output
    assert {UUID0 in line for line in power} == {True, False}
    replay = log_lines(output, re.escape("nvmlDeviceGetPcieReplayCounter (answers NO_PERMISSION)"))
    assert len(replay) == 1 and UUID1 in replay[0], output
    # ECC, remapped rows and memory temperature are absent on this consumer card: named once.
    for what in (
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)",
        "nvmlDeviceGetTemperatureThreshold(MEM_MAX)",
    ):
        pattern = UUID0 + ".*" + re.escape(what + " (answers NOT_SUPPORTED)")
        assert len(log_lines(output, pattern)) == 1, what


def test_a_temperature_change_shows_on_the_next_scrape(scenario_file):
    scenario = make_scenario(1)
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        assert scrape(base).value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 45
        scenario["devices"][0]["temperature_c"] = 83
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 83,
            timeout=5,
            what="new temperature",
        )


def test_memory_used_leaves_out_the_drivers_reserve_as_nvidia_smi_does(scenario_file):
    """An idle H200 on driver 580: 615 MiB "used" through NVML's first memory call, 0 through
    _v2 and nvidia-smi (docs/real-gpu.md). A driver without _v2 still gives used and total."""
    reserve, in_use = 644_939_776, 5_585_764_352
    scenario = make_scenario(2)
    for device in scenario["devices"]:
        device.update(memory_reserved_bytes=reserve, memory_used_bytes=in_use)
    scenario["devices"][1]["memory_info_v2"] = False
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        s = scrape(base)
    assert s.value("rigwatch_gpu_memory_used_bytes", uuid=UUID0) == in_use
    assert s.value("rigwatch_gpu_memory_reserved_bytes", uuid=UUID0) == reserve
    assert s.value("rigwatch_gpu_memory_total_bytes", uuid=UUID0) == 25_757_220_864
    # The older call counts the reserve as used; there is no reserve series then.
    assert s.value("rigwatch_gpu_memory_used_bytes", uuid=UUID1) == in_use + reserve
    assert s.value("rigwatch_gpu_memory_total_bytes", uuid=UUID1) == 25_757_220_864
    assert s.all("rigwatch_gpu_memory_reserved_bytes", uuid=UUID1) == []


def test_static_card_facts_are_read_at_start_not_on_every_scrape(scenario_file):
    # Thresholds, maximum clocks and the maximum link never change while the driver is loaded;
    # once read at initialisation, the scrape must not call NVML for them again. After start
    # every such call fails: the series stay, with the values read at start.
    scenario = full_scenario()
    write_scenario(scenario_file, scenario)
    g0 = {"gpu": "0", "uuid": UUID0}
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        assert scrape(base).value("rigwatch_gpu_memory_temperature_threshold_celsius", **g0) == 95
        scenario["devices"][0]["errors"] = {
            name: "UNKNOWN"
            for name in (
                "nvmlDeviceGetTemperatureThreshold",
                "nvmlDeviceGetMaxClockInfo",
                "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetMaxPcieLinkWidth",
                "nvmlDeviceGetNumFans",
            )
        }
        # A per-scrape reading changes at the same time, to know the edit has been seen.
        scenario["devices"][0]["temperature_c"] = 77
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_temperature_celsius", **g0) == 77,
            timeout=5,
            what="the edited scenario",
        )
        s = scrape(base)
    assert s.value("rigwatch_gpu_temperature_slowdown_threshold_celsius", **g0) == 87
    assert s.value("rigwatch_gpu_temperature_shutdown_threshold_celsius", **g0) == 92
    assert s.value("rigwatch_gpu_memory_temperature_threshold_celsius", **g0) == 95
    assert s.value("rigwatch_gpu_clock_max_hertz", **g0, clock="graphics") == 3.105e9
    assert s.value("rigwatch_gpu_pcie_link_max_generation", **g0) == 4
    assert s.value("rigwatch_gpu_pcie_link_max_width", **g0) == 16
    assert len(s.all("rigwatch_gpu_fan_speed_ratio", **g0)) == 2


NOT_AVAILABLE = 0xFFFFFFFF


def test_nvml_not_available_values_and_zero_thresholds_never_become_samples(scenario_file):
    # NVML fills an unsigned field it cannot read with 0xFFFFFFFF, answers P-state 32 when it
    # has none, and some cards report a 0 °C threshold they do not have. None of these may
    # reach /metrics: 4294967295 °C on a dashboard, or a 0 °C slowdown threshold that makes
    # every temperature alert fire.
    scenario = full_scenario()
    card = scenario["devices"][1]
    card.update(
        temperature_c=NOT_AVAILABLE,
        temperature_slowdown_c=0,
        temperature_memory_max_c=NOT_AVAILABLE,
        power_mw=NOT_AVAILABLE,
        utilization_gpu_percent=NOT_AVAILABLE,
        pstate=32,
        fan_speeds_percent=[NOT_AVAILABLE, 55],
        clocks_mhz={"graphics": NOT_AVAILABLE, "sm": 2520, "memory": 10501, "video": 1965},
        max_clocks_mhz={"graphics": NOT_AVAILABLE, "sm": 3105, "memory": 10501, "video": 2415},
    )
    card["pcie"].update(width=NOT_AVAILABLE, max_width=0, tx_kbps=NOT_AVAILABLE)
    card["processes"] = [
        {"pid": os.getpid(), "used_memory_bytes": 1 << 20, "sm_util_percent": NOT_AVAILABLE}
    ]
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--collector.pcie_throughput") as (proc, base):
        for _ in range(3):
            s = scrape(base)
        output = proc.output()
    g1 = {"gpu": "1", "uuid": UUID1}
    _up_without(
        s,
        g1,
        "rigwatch_gpu_temperature_celsius",
        "rigwatch_gpu_temperature_slowdown_threshold_celsius",
        "rigwatch_gpu_memory_temperature_threshold_celsius",
        "rigwatch_gpu_power_watts",
        "rigwatch_gpu_utilization_ratio",
        "rigwatch_gpu_pstate",
        "rigwatch_gpu_pcie_link_width",
        "rigwatch_gpu_pcie_link_max_width",
    )
    assert [labels["fan"] for labels, _ in s.all("rigwatch_gpu_fan_speed_ratio", **g1)] == ["1"]
    assert {labels["clock"] for labels, _ in s.all("rigwatch_gpu_clock_hertz", **g1)} == {
        "sm",
        "memory",
        "video",
    }
    assert {labels["clock"] for labels, _ in s.all("rigwatch_gpu_clock_max_hertz", **g1)} == {
        "sm",
        "memory",
        "video",
    }
    assert s.value("rigwatch_gpu_process_memory_bytes", **g1, pid=str(os.getpid())) == 1 << 20
    assert s.all("rigwatch_gpu_process_sm_utilization_ratio", **g1) == []
    throughput = s.all("rigwatch_gpu_pcie_throughput_bytes_per_second", **g1)
    assert [labels["direction"] for labels, _ in throughput] == ["rx"]
    # What the card does report is still there, and the other card is untouched.
    assert s.value("rigwatch_gpu_temperature_shutdown_threshold_celsius", **g1) == 93
    assert s.value("rigwatch_gpu_memory_utilization_ratio", **g1) == 0.34
    assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 60
    assert s.value("rigwatch_gpu_pstate", uuid=UUID0) == 2
    assert s.value("rigwatch_gpu_pcie_link_max_width", uuid=UUID0) == 16
    # Nor does the sentinel hide behind a unit conversion (/1000, /100, ×1e6).
    leaked = {NOT_AVAILABLE, NOT_AVAILABLE / 1000, NOT_AVAILABLE / 100, NOT_AVAILABLE * 1e6}
    assert not leaked & set(s.samples.values())
    # Logged once per card and field, not once per scrape.
    lines = log_lines(output, UUID1 + r".*not available")
    assert len(lines) == len(set(lines)) >= 10, output
    assert len(log_lines(output, UUID1 + r".*rigwatch_gpu_temperature_celsius read")) == 1, output


def test_plausible_rejects_every_not_available_form_nan_and_infinity():
    # Field values can be doubles: NaN and infinity must not slip past the sentinel check.
    from exporter.nvml.errors import plausible

    for value in (0, 1, 87, 1.5, 25_757_220_864, 2**40):
        assert plausible(value), value
    for value in (-1, -0.5, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF, float("nan"), float("inf")):
        assert not plausible(value), value
