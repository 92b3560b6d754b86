"""bench/real_gpu.py, the check made for a real NVIDIA driver, run against the simulated
library with the nvidia-smi and workload stand-ins of tests/fake_nvml/standins, so it works
the day a card is at hand: every comparison, the workload's checks and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, fake_nvml_env, inherited_environment, make_device, write_scenario

STANDINS = REPO / "tests" / "fake_nvml" / "standins"


def datacenter_and_consumer(path: Path) -> None:
    """An idle datacenter card with every field, and a consumer card with the usual gaps."""
    datacenter = make_device(
        0,
        name="NVIDIA H200",
        temperature_gpu_max_c=87,
        serial="1654123456789",
        memory_temperature_c=38,
        temperature_memory_max_c=95,
        memory_total_bytes=150_754_820_096,
        memory_used_bytes=605_028_352,
        memory_reserved_bytes=644_939_776,
        power_mw=76_543,
        power_limit_mw=700_000,
        energy_mj=123_456_789,
        utilization_gpu_percent=0,
        utilization_memory_percent=0,
        fan_speeds_percent=[],
        pstate=0,
        ecc={
            "corrected_volatile": 0,
            "uncorrected_volatile": 0,
            "corrected_aggregate": 3,
            "uncorrected_aggregate": 0,
        },
        remapped_rows={"correctable": 0, "uncorrectable": 0, "pending": 0, "failure": 0},
        vbios_version="96.00.A5.00.1A",
        inforom_image_version="G520.0282.02.02",
        inforom_versions={"oem": "2.1", "ecc": "7.16"},
        compute_capability_major=9,
        compute_capability_minor=0,
        power_min_limit_mw=200_000,
        power_max_limit_mw=700_000,
        applications_clocks_mhz={"graphics": 1980, "memory": 3201},
        default_applications_clocks_mhz={"graphics": 1980, "memory": 3201},
        mig_mode={"current": 0, "pending": 0},
        encoder_stats={"sessions": 0, "fps": 0, "latency_us": 0},
        gpm={"sm_util": 0.0, "any_tensor_util": 0.0},
    )
    consumer = make_device(1, utilization_gpu_percent=2)
    write_scenario(
        path,
        {
            "driver_version": "580.95.05",
            "cuda_driver_version": 13000,
            "devices": [datacenter, consumer],
        },
    )


def run_check(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    scenario = tmp_path / "scenario.json"
    datacenter_and_consumer(scenario)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "real_gpu.py"),
            "--out",
            str(out),
            "--nvidia-smi",
            str(STANDINS / "nvidia_smi.py"),
            "--scrapes",
            "20",
            "--probe-repeat",
            "2",
            *args,
        ],
        env={**inherited_environment(), **fake_nvml_env(scenario), **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = (out / "real-gpu-report.md").read_text()
    assert report.strip() in done.stdout, "the printed report is the written one"
    return done.returncode, report, done.stderr


def test_the_check_passes_on_the_simulated_cards_with_a_workload(
    tmp_path: Path, fake_nvml_dir: Path
) -> None:
    workload = f"{sys.executable} {STANDINS / 'workload.py'} --seconds 6 --gib 3"
    code, report, stderr = run_check(tmp_path, "--workload", workload, "--fall-timeout", "20")
    assert code == 0, report + stderr[-3000:]
    assert "**Result: all checks passed.**" in report
    # Both cards compared field by field, values as the scenario has them.
    assert "| temperature °C | temperature.gpu | 45 | 45 | ±2 | ok |" in report
    assert "| power W | power.draw | 76.54 | 76.543 | ±15 or ±10% | ok |" in report
    assert "| memory used MiB | memory.used | 577 | 577 |" in report
    assert "| memory reserved MiB | memory.reserved | 615 | 615.062 | ±2 | ok |" in report
    # The card's identity, limits and modes, as the H200 answered them.
    for row in (
        "| serial | serial | 1654123456789 | 1654123456789 | exact | ok |",
        "| VBIOS | vbios_version | 96.00.A5.00.1A | 96.00.A5.00.1A | exact | ok |",
        "| compute capability | compute_cap | 9.0 | 9.0 | exact | ok |",
        "| max power limit W | power.max_limit | 700.00 | 700 | ±0.5 | ok |",
        "| MIG mode | mig.mode.current | Disabled | 0 | exact | ok |",
        "| compute mode | compute_mode | Default | default | exact | ok |",
        "| application clock graphics MHz | clocks.applications.graphics | 1980 | 1980 | exact |",
    ):
        assert row in report, row
    assert "| ECC corrected aggregate | ecc.errors.corrected.aggregate.total | 3 | 3 |" in report
    # The consumer card refuses ECC: nvidia-smi and rigwatch both show nothing.
    consumer = report.split("Card GPU-00000001")[1]
    assert (
        "| ECC corrected volatile | ecc.errors.corrected.volatile.total | [Not Supported] |"
        in consumer
    )
    assert "both absent" in consumer
    # The workload: its process series, run name, utilisation up and down, energy against power.
    workload_part = report.split("## A real workload")[1]
    for check in (
        "a memory series for the workload's pid",
        "process memory vs nvidia-smi compute-apps",
        "start-time series: run name and start time",
        "the gpm collector's tensor activity under load",
        "utilisation rose above 50 %",
        "energy counter rise vs power integrated",
        "utilisation fell and the pid's series went",
    ):
        row = next(line for line in workload_part.splitlines() if check in line)
        assert "| ok |" in row, row
    assert "run 'workload.py'" in workload_part
    # The scrape measured against its floor, the NVML calls timed, the card's refusals listed.
    assert "| scrape p50 / floor p50 |" in report
    assert "nvmlDeviceGetTemperature(TEMPERATURE_GPU) | ok | 45 |" in report
    assert "## What GPU 1 refuses" in report
    assert (
        "`nvmlDeviceGetTotalEccErrors(MEMORY_ERROR_TYPE_CORRECTED, VOLATILE_ECC)`: NOT_SUPPORTED"
        in report
    )
    raw = json.loads((tmp_path / "out" / "real-gpu-raw.json").read_text())
    assert raw["scenario"]["devices"][0]["name"] == "NVIDIA H200"
    assert raw["load_trace"]["utilization"], "the load was traced"


def test_a_difference_from_nvidia_smi_fails_the_check(tmp_path: Path, fake_nvml_dir: Path) -> None:
    code, report, stderr = run_check(
        tmp_path,
        "--workload",
        "",
        env={
            "NVIDIA_SMI_STANDIN_SKEW": "temperature.gpu=7,clocks.max.sm=1",
            "NVIDIA_SMI_STANDIN_TLIMIT": "1",
        },
    )
    assert code == 1, report + stderr[-3000:]
    assert "**Result: 4 check(s) found a difference.**" in report
    assert "| temperature °C | temperature.gpu | 52 | 45 | ±2 | DIFF |" in report
    assert "| SM clock max MHz | clocks.max.sm | 3106 | 3105 | exact | DIFF |" in report
    # Thresholds printed relative to T.Limit (driver 580) are turned back into NVML's values.
    assert "| slowdown °C | q:GPU Slowdown Temp | 90 C (from T.Limit) | 90 | exact | ok |" in report
    assert "| shutdown °C | q:GPU Shutdown Temp | 95 C (from T.Limit) | 95 | exact | ok |" in report
