"""Scenario builders for the exporter's tests (on top of tests.support's make_scenario)."""

from __future__ import annotations

from tests.support import make_scenario


def full_scenario(processes: list[dict] | None = None) -> dict:
    """Two cards where every field is supported, with values distinct per card so a test can
    tell a unit conversion or a card mix-up from the right answer."""
    scenario = make_scenario(2)
    for index, device in enumerate(scenario["devices"]):
        device.update(
            temperature_c=60 + index,
            temperature_slowdown_c=87 + index,
            temperature_shutdown_c=92 + index,
            temperature_memory_max_c=95 + index,
            memory_temperature_c=70 + index,
            fan_speeds_percent=[40 + index, 55],
            power_mw=250_500 + index * 1000,
            power_limit_mw=300_000,
            energy_mj=7_200_000 + index,
            utilization_gpu_percent=97,
            utilization_memory_percent=33 + index,
            encoder_percent=12,
            decoder_percent=7,
            memory_total_bytes=25_757_220_864,
            memory_used_bytes=4_294_967_296 + index,
            clocks_mhz={"graphics": 2520, "sm": 2520, "memory": 10501, "video": 1965},
            max_clocks_mhz={"graphics": 3105, "sm": 3105, "memory": 10501, "video": 2415},
            recovery_action=index,
            pstate=2,
            clock_event_reasons=0x4 | 0x20,  # sw power cap + sw thermal
            pcie={
                "gen": 1 + index,
                "max_gen": 4,
                "width": 4,
                "max_width": 16,
                "replay_counter": 17,
                "tx_kbps": 1500,
                "rx_kbps": 2500,
            },
            ecc={
                "corrected_volatile": 3,
                "uncorrected_volatile": 1,
                "corrected_aggregate": 30,
                "uncorrected_aggregate": 2,
            },
            remapped_rows={"correctable": 5, "uncorrectable": 1, "pending": True, "failure": False},
            processes=processes if processes is not None and index == 0 else [],
            # Identity, limits, modes and the health counters beyond the readings.
            serial=f"165412404561{index}",
            vbios_version="96.00.A5.00.1A",
            board_part_number="692-2G520-0282-001",
            inforom_image_version="G520.0282.02.02",
            inforom_versions={"oem": "2.1", "ecc": "7.16", "power": None},
            compute_capability_major=9,
            compute_capability_minor=0,
            power_default_limit_mw=300_000,
            power_min_limit_mw=100_000 + index * 1000,
            power_max_limit_mw=350_000,
            applications_clocks_mhz={"graphics": 1980 - index, "memory": 3201},
            default_applications_clocks_mhz={"graphics": 1980, "memory": 3201},
            mig_mode={"current": 0, "pending": index},
            compute_mode=3 * index,  # default, exclusive process
            retired_pages={"single_bit": 2 + index, "double_bit": index, "pending": index},
            encoder_stats={"sessions": 2 * index, "fps": 60, "latency_us": 1500},
            nvlinks=[
                {"up": True, "replay": 4 + index, "recovery": 1, "crc_flit": 7, "crc_data": 0},
                {"up": index == 0, "replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0},
            ],
        )
    return scenario
