"""The real-driver check: rigwatch's exporter against a real NVIDIA driver, in one short run.

    python3 bench/real_gpu.py --out DIR            # on a machine with an NVIDIA driver
    python3 bench/real_gpu.py --out DIR --nvidia-smi tests/fake_nvml/standins/nvidia_smi.py \
        --workload "python3 tests/fake_nvml/standins/workload.py"   # the suite, simulated

What it does, each step bounded in time so the whole run stays under 4 minutes:
1. starts `python -m exporter` from this working tree on the machine's NVML and scrapes it;
2. compares every value rigwatch serves with what `nvidia-smi` reports for the same card at the
   same moment (a scrape, nvidia-smi, a scrape: the value must lie within the field's tolerance
   of the two scrapes), idle and again under load, and lists the fields the card refuses and
   how rigwatch shows them;
3. runs a GPU workload (bench/real_gpu_load.py: PyTorch, a few GiB, ~40 s) and checks the
   per-process series (pid, name, user, memory against nvidia-smi's compute-apps), the run's
   start-time series and its run name, the utilisation rising and falling, and the energy
   counter against the power readings;
4. measures the scrape on this driver: p50/p99 over N scrapes, CPU per scrape, the floor
   (bench/floor_reader.py) and the ratio, and the cost of every NVML call rigwatch makes (and
   of the ones it does not), per call;
5. reads what the card answers that rigwatch does not serve (NVML getters, every field id of
   nvmlDeviceGetFieldValues, GPM metrics) and lists them;
6. prints one markdown report and writes it, with the raw readings, to --out.

Needs only what a GPU machine has: Python with nvidia-ml-py, prometheus_client and psutil;
PyTorch for the workload. Exit status: 0 all checks passed, 1 a check found a difference,
2 a step could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pynvml as n
from bench_exporter import PROMETHEUS_HEADERS, ScrapeClient, run_floor_reader, scrape_loop
from benchkit import REPO, percentile  # bench/ is sys.path[0] when run as a script
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ManagedProcess, wait_until

MIB = 2**20
UNAVAILABLE = ("[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", "")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what rigwatch serves -----------------------------------------------------------------


@dataclass
class Scrape:
    """One parsed scrape: every sample as (name, labels, value)."""

    at: float
    samples: list[tuple[str, dict[str, str], float]]

    def values(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (lab, value)
            for sample_name, lab, value in self.samples
            if sample_name == name and all(lab.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.values(name, **labels)
        return found[0][1] if found else None

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


def parse_exposition(text: str, at: float) -> Scrape:
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append((sample.name, dict(sample.labels), float(sample.value)))
    return Scrape(at, samples)


class Exporter:
    """The exporter from this working tree on a free loopback port, scraped like Prometheus."""

    def __init__(self, extra_args: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = ManagedProcess(
            [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{self.port}"]
            + extra_args,
            env=dict(os.environ),
            cwd=REPO,
        )
        self.client = ScrapeClient(self.port)

    def scrape(self) -> Scrape:
        result = self.client.get({"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        if result.status != 200:
            raise RuntimeError(f"/metrics answered HTTP {result.status}")
        return parse_exposition(result.body.decode(), time.time())

    def stop(self) -> str:
        self.client.close()
        output = self.proc.output()
        self.proc.stop()
        return output


# --- what nvidia-smi says -----------------------------------------------------------------


class NvidiaSmi:
    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.valid = self._valid_fields()

    def run(self, *args: str, timeout: float = 30) -> str:
        done = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.command + list(args))[:120]} exited {done.returncode}: "
                f"{(done.stdout + done.stderr).strip()[:300]}"
            )
        return done.stdout

    def _valid_fields(self) -> set[str]:
        text = self.run("--help-query-gpu")
        return {
            name
            for line in text.splitlines()
            if line.startswith('"')
            for name in re.findall(r'"([^"]+)"', line)
        }

    def query_gpu(self, fields: list[str]) -> list[dict[str, str]]:
        """One row per card: field → raw text (units left out)."""
        wanted = [f for f in fields if f in self.valid]
        text = self.run(f"--query-gpu={','.join(wanted)}", "--format=csv,noheader,nounits")
        rows = []
        for line in text.strip().splitlines():
            parts = [p.strip() for p in line.split(", ")]
            rows.append(dict(zip(wanted, parts, strict=False)))
        return rows

    def compute_apps(self) -> list[dict[str, str]]:
        text = self.run(
            "--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
            "--format=csv,noheader,nounits",
        )
        keys = ("pid", "process_name", "used_memory", "gpu_uuid")
        return [
            dict(zip(keys, [p.strip() for p in line.split(", ")], strict=False))
            for line in text.strip().splitlines()
            if line.strip() and "No running" not in line
        ]

    def details(self) -> dict[str, dict[str, str]]:
        """`nvidia-smi -q -d TEMPERATURE` per card (by bus id), plus the header's versions
        under the key "" (what --query-gpu has no field for: thresholds, CUDA version)."""
        text = self.run("-q", "-d", "TEMPERATURE")
        cards: dict[str, dict[str, str]] = {"": {}}
        current = cards[""]
        for line in text.splitlines():
            bus = re.match(r"^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])\s*$", line)
            if bus:
                current = cards.setdefault(normal_bus_id(bus.group(1)), {})
                continue
            if ":" in line:
                key, _, value = line.partition(":")
                current.setdefault(key.strip(), value.strip())
        for card in cards.values():
            absolute_from_tlimit(card)
        return cards


def absolute_from_tlimit(card: dict[str, str]) -> None:
    """Newer drivers (580 on an H200) print the thresholds only relative to T.Limit, the GPU's
    maximum operating temperature: "GPU T.Limit Temp" is its distance from the current
    temperature, "GPU Shutdown T.Limit Temp: -8 C" means 8 °C above it. The absolute values
    NVML answers follow from one reading of the three."""
    current = smi_number(card.get("GPU Current Temp"))
    margin = smi_number(card.get("GPU T.Limit Temp"))
    if current is None or margin is None:
        return
    limit = current + margin
    for absolute, relative in (
        ("GPU Shutdown Temp", "GPU Shutdown T.Limit Temp"),
        ("GPU Slowdown Temp", "GPU Slowdown T.Limit Temp"),
        ("GPU Max Operating Temp", "GPU Max Operating T.Limit Temp"),
    ):
        offset = smi_number(card.get(relative))
        if absolute not in card and offset is not None:
            card[absolute] = f"{limit - offset:g} C (from T.Limit)"


def normal_bus_id(bus_id: str) -> str:
    """`00000000:18:00.0` and `0000:18:00.0` → `0000:18:00.0` (sysfs's spelling)."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


def smi_number(text: str | None) -> float | None:
    if text is None or text.strip() in UNAVAILABLE or text.startswith("["):
        return None
    text = text.strip()
    words = {"enabled": 1.0, "disabled": 0.0, "yes": 1.0, "no": 0.0, "active": 1.0}
    if text.lower() in words:
        return words[text.lower()]
    if re.fullmatch(r"P\d+", text):
        return float(text[1:])
    if text.lower().startswith("0x"):
        return float(int(text, 16))
    match = re.match(r"^-?\d+(\.\d+)?", text)
    return float(match.group(0)) if match else None


# --- comparisons --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 0.0
    relative: float = 0.0

    def allows(self, expected: float, low: float, high: float) -> bool:
        slack = max(self.absolute, self.relative * abs(expected))
        return low - slack <= expected <= high + slack

    def __str__(self) -> str:
        if not self.absolute and not self.relative:
            return "exact"
        parts = []
        if self.absolute:
            parts.append(f"±{self.absolute:g}")
        if self.relative:
            parts.append(f"±{self.relative:.0%}")
        return " or ".join(parts)


EXACT = Tolerance()


@dataclass(frozen=True)
class Field:
    """One nvidia-smi field against what rigwatch serves for it."""

    label: str
    smi: tuple[str, ...]  # --query-gpu names, first valid one used; "q:Key" reads -q's text
    served: Callable[[Scrape, str], float | str | None] | None  # (scrape, uuid) → value
    scale: float = 1.0  # one nvidia-smi unit in rigwatch's (MiB → 2**20 bytes, % → 0.01)
    tolerance: Tolerance = EXACT
    dynamic: bool = False  # compared again under load
    text: bool = False


def metric(name: str, scale: float = 1.0, **labels: str):
    def read(scrape: Scrape, uuid: str) -> float | None:
        value = scrape.value(name, uuid=uuid, **labels)
        return None if value is None else value / scale

    read.metric = name  # type: ignore[attr-defined]
    return read


def info_label(name: str, label: str, per_card: bool = True):
    def read(scrape: Scrape, uuid: str) -> str | None:
        found = scrape.values(name, **({"uuid": uuid} if per_card else {}))
        return found[0][0].get(label) if found else None

    read.metric = name  # type: ignore[attr-defined]
    return read


def throttle_mask(scrape: Scrape, uuid: str) -> float | None:
    bits = {
        "gpu_idle": 0x1,
        "applications_clocks": 0x2,
        "sw_power_cap": 0x4,
        "hw_slowdown": 0x8,
        "sync_boost": 0x10,
        "sw_thermal": 0x20,
        "hw_thermal": 0x40,
        "hw_power_brake": 0x80,
        "display_clocks": 0x100,
    }
    found = scrape.values("rigwatch_gpu_throttle_reason_active", uuid=uuid)
    if not found:
        return None
    return float(sum(bits.get(lab["reason"], 0) for lab, value in found if value == 1))


throttle_mask.metric = "rigwatch_gpu_throttle_reason_active"  # type: ignore[attr-defined]


def _num(label, smi, name, scale=1.0, tol=EXACT, dynamic=False, **labels) -> Field:
    return Field(label, tuple(smi.split("|")), metric(name, scale, **labels), scale, tol, dynamic)


def _text(label, smi, name, label_name, per_card=True) -> Field:
    return Field(label, (smi,), info_label(name, label_name, per_card), text=True)


T2 = Tolerance(absolute=2)
WATT = Tolerance(absolute=0.5)
POWER = Tolerance(absolute=15, relative=0.10)
UTIL = Tolerance(absolute=10)
CLOCK = Tolerance(absolute=15, relative=0.05)
IDENTITY = "rigwatch_gpu_identity_info"
# nvidia-smi's field (alternatives after "|"; "q:Key" reads `nvidia-smi -q`), rigwatch's
# series, nvidia-smi's unit in rigwatch's, the tolerance, and whether it is compared under load.
FIELDS: list[Field] = [
    _text("name", "name", "rigwatch_gpu_info", "name"),
    _text("uuid", "uuid", "rigwatch_gpu_info", "uuid"),
    _text("PCI bus id", "pci.bus_id", "rigwatch_gpu_info", "pci_bus_id"),
    _text("driver version", "driver_version", "rigwatch_driver_info", "driver_version", False),
    _text("CUDA version", "q:CUDA Version", "rigwatch_driver_info", "cuda_version", False),
    _text("serial", "serial", IDENTITY, "serial"),
    _text("VBIOS", "vbios_version", IDENTITY, "vbios_version"),
    _text("compute capability", "compute_cap", IDENTITY, "compute_capability"),
    _num(
        "temperature °C",
        "temperature.gpu",
        "rigwatch_gpu_temperature_celsius",
        tol=T2,
        dynamic=True,
    ),
    _num(
        "memory temperature °C",
        "temperature.memory",
        "rigwatch_gpu_memory_temperature_celsius",
        tol=T2,
        dynamic=True,
    ),
    _num(
        "slowdown °C", "q:GPU Slowdown Temp", "rigwatch_gpu_temperature_slowdown_threshold_celsius"
    ),
    _num(
        "shutdown °C", "q:GPU Shutdown Temp", "rigwatch_gpu_temperature_shutdown_threshold_celsius"
    ),
    _num(
        "memory max °C",
        "q:Memory Max Operating Temp",
        "rigwatch_gpu_memory_temperature_threshold_celsius",
    ),
    _num(
        "power W",
        "power.draw|power.draw.instant",
        "rigwatch_gpu_power_watts",
        tol=POWER,
        dynamic=True,
    ),
    _num(
        "power limit W",
        "enforced.power.limit|power.limit",
        "rigwatch_gpu_power_limit_watts",
        tol=WATT,
    ),
    _num(
        "default power limit W",
        "power.default_limit",
        "rigwatch_gpu_power_default_limit_watts",
        tol=WATT,
    ),
    _num("min power limit W", "power.min_limit", "rigwatch_gpu_power_min_limit_watts", tol=WATT),
    _num("max power limit W", "power.max_limit", "rigwatch_gpu_power_max_limit_watts", tol=WATT),
    _num("memory used MiB", "memory.used", "rigwatch_gpu_memory_used_bytes", MIB, T2, True),
    _num("memory total MiB", "memory.total", "rigwatch_gpu_memory_total_bytes", MIB, T2),
    _num("memory reserved MiB", "memory.reserved", "rigwatch_gpu_memory_reserved_bytes", MIB, T2),
    _num(
        "graphics clock MHz",
        "clocks.gr",
        "rigwatch_gpu_clock_hertz",
        1e6,
        CLOCK,
        True,
        clock="graphics",
    ),
    _num("SM clock MHz", "clocks.sm", "rigwatch_gpu_clock_hertz", 1e6, CLOCK, True, clock="sm"),
    _num(
        "memory clock MHz",
        "clocks.mem",
        "rigwatch_gpu_clock_hertz",
        1e6,
        CLOCK,
        True,
        clock="memory",
    ),
    _num(
        "video clock MHz",
        "clocks.video",
        "rigwatch_gpu_clock_hertz",
        1e6,
        CLOCK,
        True,
        clock="video",
    ),
    _num(
        "graphics clock max MHz",
        "clocks.max.gr",
        "rigwatch_gpu_clock_max_hertz",
        1e6,
        clock="graphics",
    ),
    _num("SM clock max MHz", "clocks.max.sm", "rigwatch_gpu_clock_max_hertz", 1e6, clock="sm"),
    _num(
        "memory clock max MHz",
        "clocks.max.mem",
        "rigwatch_gpu_clock_max_hertz",
        1e6,
        clock="memory",
    ),
    _num("P-state", "pstate", "rigwatch_gpu_pstate", dynamic=True),
    _num("fan %", "fan.speed", "rigwatch_gpu_fan_speed_ratio", 0.01, T2, True, fan="0"),
    _num(
        "GPU utilisation %", "utilization.gpu", "rigwatch_gpu_utilization_ratio", 0.01, UTIL, True
    ),
    _num(
        "memory utilisation %",
        "utilization.memory",
        "rigwatch_gpu_memory_utilization_ratio",
        0.01,
        UTIL,
        True,
    ),
    _num("ECC mode", "ecc.mode.current", "rigwatch_gpu_ecc_mode", state="current"),
    _num("ECC mode pending", "ecc.mode.pending", "rigwatch_gpu_ecc_mode", state="pending"),
    _num("MIG mode", "mig.mode.current", "rigwatch_gpu_mig_mode", state="current"),
    _text("compute mode", "compute_mode", "rigwatch_gpu_compute_mode", "mode"),
    _text("InfoROM image", "inforom.img", IDENTITY, "inforom_image_version"),
    _text("InfoROM OEM", "inforom.oem", IDENTITY, "inforom_oem_version"),
    _text("InfoROM ECC", "inforom.ecc", IDENTITY, "inforom_ecc_version"),
    _num(
        "application clock graphics MHz",
        "clocks.applications.graphics|clocks.applications.gr",
        "rigwatch_gpu_applications_clock_hertz",
        1e6,
        clock="graphics",
    ),
    _num(
        "application clock memory MHz",
        "clocks.applications.memory|clocks.applications.mem",
        "rigwatch_gpu_applications_clock_hertz",
        1e6,
        clock="memory",
    ),
    _num(
        "default application clock graphics MHz",
        "clocks.default_applications.graphics|clocks.default_applications.gr",
        "rigwatch_gpu_applications_clock_default_hertz",
        1e6,
        clock="graphics",
    ),
    _num("encoder sessions", "encoder.stats.sessionCount", "rigwatch_gpu_encoder_sessions"),
    *(
        _num(
            f"ECC {kind} {scope}",
            f"ecc.errors.{kind}.{scope}.total",
            "rigwatch_gpu_ecc_errors_total",
            type=kind,
            scope=scope,
        )
        for kind in ("corrected", "uncorrected")
        for scope in ("volatile", "aggregate")
    ),
    _num(
        "retired pages single-bit",
        "retired_pages.single_bit_ecc.count|retired_pages.sbe",
        "rigwatch_gpu_retired_pages",
        cause="single_bit_ecc",
    ),
    _num(
        "retired pages double-bit",
        "retired_pages.double_bit.count|retired_pages.dbe",
        "rigwatch_gpu_retired_pages",
        cause="double_bit_ecc",
    ),
    _num(
        "remapped rows correctable",
        "remapped_rows.correctable",
        "rigwatch_gpu_remapped_rows",
        type="correctable",
    ),
    _num(
        "remapped rows uncorrectable",
        "remapped_rows.uncorrectable",
        "rigwatch_gpu_remapped_rows",
        type="uncorrectable",
    ),
    _num("remapped rows pending", "remapped_rows.pending", "rigwatch_gpu_remapped_rows_pending"),
    _num("remapped rows failure", "remapped_rows.failure", "rigwatch_gpu_remapped_rows_failure"),
    _num(
        "PCIe generation",
        "pcie.link.gen.current",
        "rigwatch_gpu_pcie_link_generation",
        dynamic=True,
    ),
    _num("PCIe max generation", "pcie.link.gen.max", "rigwatch_gpu_pcie_link_max_generation"),
    _num("PCIe width", "pcie.link.width.current", "rigwatch_gpu_pcie_link_width", dynamic=True),
    _num("PCIe max width", "pcie.link.width.max", "rigwatch_gpu_pcie_link_max_width"),
    Field(
        "throttle reasons (the 9 named bits)",
        ("clocks_event_reasons.active", "clocks_throttle_reasons.active"),
        throttle_mask,
        dynamic=True,
    ),
    _num("persistence mode", "persistence_mode", "rigwatch_gpu_persistence_mode"),
]


@dataclass
class Comparison:
    field: str
    smi_name: str
    smi: str
    rigwatch: str
    tolerance: str
    verdict: str  # ok, DIFF, MISSING, both absent, not served, not in nvidia-smi, CHECK

    @property
    def failed(self) -> bool:
        return self.verdict in ("DIFF", "MISSING")


def smi_value(
    field_: Field,
    row: dict[str, str],
    details: dict[str, str],
    header: dict[str, str],
    valid: set[str],
) -> tuple[str, str | None]:
    """(the nvidia-smi name used, its raw text) — None text when nvidia-smi lacks the field."""
    for name in field_.smi:
        if name.startswith("q:"):
            key = name[2:]
            if key in details:
                return name, details[key]
            if key in header:
                return name, header[key]
            continue
        if name in valid:
            return name, row.get(name, "")
    return field_.smi[0], None


def compare_card(
    field_list: list[Field],
    before: Scrape,
    row: dict[str, str],
    after: Scrape,
    details: dict[str, str],
    header: dict[str, str],
    valid: set[str],
    served_names: set[str],
) -> list[Comparison]:
    """Each field of one card: nvidia-smi's value between two scrapes."""
    uuid = row.get("uuid", "")
    out = []
    for f in field_list:
        smi_name, raw = smi_value(f, row, details, header, valid)
        tol = str(f.tolerance) if not f.text else "exact"
        metric_name = getattr(f.served, "metric", "")
        is_served = metric_name in served_names
        if raw is None:
            out.append(
                Comparison(f.label, smi_name, "(no such field)", "", tol, "not in nvidia-smi")
            )
            continue
        values = [f.served(s, uuid) if f.served else None for s in (before, after)]
        shown = " / ".join(fmt(v) for v in dict.fromkeys(values))
        if f.text:
            expected: Any = raw.strip()
            if f.label == "PCI bus id":
                expected = normal_bus_id(expected)
            got = [v for v in values if v is not None]
            if expected in UNAVAILABLE or expected.startswith("["):
                verdict = "both absent" if not got else "CHECK"
            elif not got:
                verdict = "MISSING" if is_served else "not served"
            else:
                same = {g.lower() for g in got} if f.label == "compute mode" else set(got)
                verdict = (
                    "ok"
                    if (expected.lower() if f.label == "compute mode" else expected) in same
                    else "DIFF"
                )
            out.append(Comparison(f.label, smi_name, raw, shown, tol, verdict))
            continue
        expected_num = smi_number(raw)
        got_num = [v for v in values if isinstance(v, float)]
        if expected_num is None:
            verdict = "both absent" if not got_num else "CHECK"
        elif not got_num:
            verdict = "MISSING" if is_served else "not served"
        elif f.label.startswith("throttle"):
            verdict = "ok" if (int(expected_num) & 0x1FF) in {int(v) for v in got_num} else "DIFF"
        else:
            ok = f.tolerance.allows(expected_num, min(got_num), max(got_num))
            verdict = "ok" if ok else "DIFF"
        out.append(Comparison(f.label, smi_name, raw, shown, tol, verdict))
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --- the NVML probe -----------------------------------------------------------------------


def plain(value: Any, depth: int = 0) -> Any:
    """An NVML answer as JSON-able data (structures as dicts, bytes as text)."""
    if isinstance(value, ctypes.Structure) and depth < 3:
        return {
            name: plain(getattr(value, name), depth + 1)
            for name, *_ in value._fields_
            if not name.startswith("_")
        }
    if isinstance(value, ctypes.Array) and depth < 3:
        return [plain(v, depth + 1) for v in list(value)[:16]]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)) and depth < 3:
        return [plain(v, depth + 1) for v in value[:16]]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(value)[:200]


def _fn(name: str) -> Callable[..., Any] | None:
    return getattr(n, name, None)


# (family, NVML function, its arguments after the handle (constant names as strings), the
# series rigwatch serves it as, or ""): what rigwatch reads each scrape, and what it does not.
PROBE_CALLS: list[tuple[str, str, tuple, str]] = [
    ("identity", "nvmlDeviceGetName", (), "rigwatch_gpu_info"),
    ("identity", "nvmlDeviceGetUUID", (), "rigwatch_gpu_info"),
    ("identity", "nvmlDeviceGetPciInfo", (), "rigwatch_gpu_info"),
    *(
        ("identity", f"nvmlDeviceGet{what}", (), "")
        for what in (
            "Serial",
            "VbiosVersion",
            "BoardPartNumber",
            "BoardId",
            "Brand",
            "Architecture",
            "CudaComputeCapability",
            "NumGpuCores",
            "MemoryBusWidth",
            "BusType",
            "MinorNumber",
            "InforomImageVersion",
        )
    ),
    *(
        ("identity", "nvmlDeviceGetInforomVersion", (f"NVML_INFOROM_{o}",), "")
        for o in ("OEM", "ECC", "POWER")
    ),
    *(
        ("modes", f"nvmlDeviceGet{what}", (), "")
        for what in (
            "PersistenceMode",
            "ComputeMode",
            "MigMode",
            "EccMode",
            "DisplayMode",
            "DisplayActive",
            "VirtualizationMode",
            "PowerManagementMode",
        )
    ),
    (
        "temperature",
        "nvmlDeviceGetTemperature",
        ("NVML_TEMPERATURE_GPU",),
        "rigwatch_gpu_temperature_celsius",
    ),
    (
        "temperature",
        "nvmlDeviceGetTemperatureThreshold",
        ("NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",),
        "rigwatch_gpu_temperature_slowdown_threshold_celsius",
    ),
    (
        "temperature",
        "nvmlDeviceGetTemperatureThreshold",
        ("NVML_TEMPERATURE_THRESHOLD_SHUTDOWN",),
        "rigwatch_gpu_temperature_shutdown_threshold_celsius",
    ),
    (
        "temperature",
        "nvmlDeviceGetTemperatureThreshold",
        ("NVML_TEMPERATURE_THRESHOLD_MEM_MAX",),
        "rigwatch_gpu_memory_temperature_threshold_celsius",
    ),
    *(
        (
            "temperature",
            "nvmlDeviceGetTemperatureThreshold",
            (f"NVML_TEMPERATURE_THRESHOLD_{t}",),
            "",
        )
        for t in ("GPU_MAX", "ACOUSTIC_MIN", "ACOUSTIC_CURR", "ACOUSTIC_MAX")
    ),
    ("power", "nvmlDeviceGetPowerUsage", (), "rigwatch_gpu_power_watts"),
    ("power", "nvmlDeviceGetEnforcedPowerLimit", (), "rigwatch_gpu_power_limit_watts"),
    *(
        ("power", f"nvmlDeviceGet{what}", (), "")
        for what in (
            "PowerManagementLimit",
            "PowerManagementDefaultLimit",
            "PowerManagementLimitConstraints",
            "PowerSource",
        )
    ),
    ("energy", "nvmlDeviceGetTotalEnergyConsumption", (), "rigwatch_gpu_energy_joules_total"),
    # The same readings through field values: one call for several, perhaps cheaper.
    ("fields", "nvmlDeviceGetFieldValues", ([83],), ""),
    ("fields", "nvmlDeviceGetFieldValues", ([82],), "rigwatch_gpu_memory_temperature_celsius"),
    ("fields", "nvmlDeviceGetFieldValues", ([230],), "rigwatch_gpu_recovery_action"),
    ("fields", "nvmlDeviceGetFieldValues", ([82, 83, 94, 230],), ""),
    ("fields", "nvmlDeviceGetFieldValues", ([82, 83, 94, 185, 186, 230, 197, 198],), ""),
    ("utilisation", "nvmlDeviceGetUtilizationRates", (), "rigwatch_gpu_utilization_ratio"),
    (
        "utilisation",
        "nvmlDeviceGetEncoderUtilization",
        (),
        "rigwatch_gpu_encoder_utilization_ratio",
    ),
    (
        "utilisation",
        "nvmlDeviceGetDecoderUtilization",
        (),
        "rigwatch_gpu_decoder_utilization_ratio",
    ),
    ("utilisation", "nvmlDeviceGetJpgUtilization", (), ""),
    ("utilisation", "nvmlDeviceGetOfaUtilization", (), ""),
    ("encoder", "nvmlDeviceGetEncoderStats", (), ""),
    ("encoder", "nvmlDeviceGetEncoderCapacity", ("NVML_ENCODER_QUERY_H264",), ""),
    ("encoder", "nvmlDeviceGetFBCStats", (), ""),
    ("memory", "nvmlDeviceGetMemoryInfo", (), "rigwatch_gpu_memory_used_bytes"),
    ("memory", "nvmlDeviceGetMemoryInfo", ("nvmlMemory_v2",), ""),
    ("memory", "nvmlDeviceGetBAR1MemoryInfo", (), ""),
    *(
        ("clocks", "nvmlDeviceGetClockInfo", (f"NVML_CLOCK_{c}",), "rigwatch_gpu_clock_hertz")
        for c in ("GRAPHICS", "SM", "MEM", "VIDEO")
    ),
    *(
        (
            "clocks",
            "nvmlDeviceGetMaxClockInfo",
            (f"NVML_CLOCK_{c}",),
            "rigwatch_gpu_clock_max_hertz",
        )
        for c in ("GRAPHICS", "SM", "MEM", "VIDEO")
    ),
    *(
        ("clocks", fn, (f"NVML_CLOCK_{c}",), "")
        for fn in ("nvmlDeviceGetApplicationsClock", "nvmlDeviceGetDefaultApplicationsClock")
        for c in ("GRAPHICS", "MEM")
    ),
    ("clocks", "nvmlDeviceGetPerformanceState", (), "rigwatch_gpu_pstate"),
    ("clocks", "nvmlDeviceGetCurrentClocksEventReasons", (), "rigwatch_gpu_throttle_reason_active"),
    ("clocks", "nvmlDeviceGetSupportedClocksEventReasons", (), ""),
    *(
        ("clocks", "nvmlDeviceGetViolationStatus", (f"NVML_PERF_POLICY_{k}",), "")
        for k in ("POWER", "THERMAL", "SYNC_BOOST", "BOARD_LIMIT", "LOW_UTILIZATION", "RELIABILITY")
    ),
    ("fans", "nvmlDeviceGetNumFans", (), "rigwatch_gpu_fan_speed_ratio"),
    ("fans", "nvmlDeviceGetFanSpeed", (), "rigwatch_gpu_fan_speed_ratio"),
    ("pcie", "nvmlDeviceGetCurrPcieLinkGeneration", (), "rigwatch_gpu_pcie_link_generation"),
    ("pcie", "nvmlDeviceGetMaxPcieLinkGeneration", (), "rigwatch_gpu_pcie_link_max_generation"),
    ("pcie", "nvmlDeviceGetGpuMaxPcieLinkGeneration", (), ""),
    ("pcie", "nvmlDeviceGetCurrPcieLinkWidth", (), "rigwatch_gpu_pcie_link_width"),
    ("pcie", "nvmlDeviceGetMaxPcieLinkWidth", (), "rigwatch_gpu_pcie_link_max_width"),
    ("pcie", "nvmlDeviceGetPcieReplayCounter", (), "rigwatch_gpu_pcie_replay_errors_total"),
    ("pcie", "nvmlDeviceGetPcieSpeed", (), ""),
    (
        "pcie",
        "nvmlDeviceGetPcieThroughput",
        ("NVML_PCIE_UTIL_TX_BYTES",),
        "rigwatch_gpu_pcie_throughput_bytes_per_second",
    ),
    *(
        (
            "ecc",
            "nvmlDeviceGetTotalEccErrors",
            (f"NVML_MEMORY_ERROR_TYPE_{t}", f"NVML_{s}_ECC"),
            "rigwatch_gpu_ecc_errors_total",
        )
        for t in ("CORRECTED", "UNCORRECTED")
        for s in ("VOLATILE", "AGGREGATE")
    ),
    ("ecc", "nvmlDeviceGetRemappedRows", (), "rigwatch_gpu_remapped_rows"),
    (
        "ecc",
        "nvmlDeviceGetRetiredPages",
        ("NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS",),
        "",
    ),
    ("ecc", "nvmlDeviceGetRetiredPages", ("NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR",), ""),
    ("ecc", "nvmlDeviceGetRetiredPagesPendingStatus", (), ""),
    ("processes", "nvmlDeviceGetComputeRunningProcesses", (), "rigwatch_gpu_process_memory_bytes"),
    ("processes", "nvmlDeviceGetGraphicsRunningProcesses", (), "rigwatch_gpu_process_memory_bytes"),
    (
        "processes",
        "nvmlDeviceGetProcessUtilization",
        (0,),
        "rigwatch_gpu_process_sm_utilization_ratio",
    ),
    ("nvlink", "nvmlDeviceGetNvLinkState", (0,), ""),
    ("nvlink", "nvmlDeviceGetNvLinkVersion", (0,), ""),
    ("nvlink", "nvmlDeviceGetNvLinkRemotePciInfo", (0,), ""),
    ("nvlink", "nvmlDeviceGetNvLinkErrorCounter", (0, "NVML_NVLINK_ERROR_DL_REPLAY"), ""),
    ("events", "nvmlDeviceGetSupportedEventTypes", (), "rigwatch_gpu_xid_errors_total"),
    ("gpm", "nvmlGpmQueryDeviceSupport", (), ""),
    ("other", "nvmlDeviceGetSamples", ("NVML_TOTAL_POWER_SAMPLES", 0), ""),
]
# The calls whose answers rigwatch serves, beyond those PROBE_CALLS names with a series.
SERVED_BY = {
    **dict.fromkeys(
        (
            "nvmlDeviceGetSerial",
            "nvmlDeviceGetVbiosVersion",
            "nvmlDeviceGetBoardPartNumber",
            "nvmlDeviceGetCudaComputeCapability",
            "nvmlDeviceGetInforomImageVersion",
            "nvmlDeviceGetInforomVersion",
        ),
        "rigwatch_gpu_identity_info",
    ),
    "nvmlDeviceGetPersistenceMode": "rigwatch_gpu_persistence_mode",
    "nvmlDeviceGetComputeMode": "rigwatch_gpu_compute_mode",
    "nvmlDeviceGetMigMode": "rigwatch_gpu_mig_mode",
    "nvmlDeviceGetEccMode": "rigwatch_gpu_ecc_mode",
    "nvmlDeviceGetPowerManagementDefaultLimit": "rigwatch_gpu_power_default_limit_watts",
    "nvmlDeviceGetPowerManagementLimitConstraints": "rigwatch_gpu_power_max_limit_watts",
    "nvmlDeviceGetApplicationsClock": "rigwatch_gpu_applications_clock_hertz",
    "nvmlDeviceGetDefaultApplicationsClock": "rigwatch_gpu_applications_clock_default_hertz",
    "nvmlDeviceGetRetiredPages": "rigwatch_gpu_retired_pages",
    "nvmlDeviceGetRetiredPagesPendingStatus": "rigwatch_gpu_retired_pages_pending",
    "nvmlDeviceGetEncoderStats": "rigwatch_gpu_encoder_sessions",
    "nvmlDeviceGetNvLinkState": "rigwatch_gpu_nvlink_up",
    "nvmlDeviceGetNvLinkErrorCounter": "rigwatch_gpu_nvlink_errors_total",
    "nvmlGpmQueryDeviceSupport": "rigwatch_gpu_sm_activity_ratio",
}
# Older and newer names of one call.
RENAMED = {
    "nvmlDeviceGetCurrentClocksEventReasons": "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetSupportedClocksEventReasons": "nvmlDeviceGetSupportedClocksThrottleReasons",
}


def probe_calls() -> list[tuple[str, str, Callable[[Any], Any] | None, str]]:
    """PROBE_CALLS as (family, the call written out, reader(handle) or None, series)."""
    out = []
    for family, name, arg_names, served in PROBE_CALLS:
        served = served or SERVED_BY.get(name, "")
        fn = _fn(name) or _fn(RENAMED.get(name, ""))
        args = tuple(getattr(n, a, None) if isinstance(a, str) else a for a in arg_names)
        shown = f"{name}({', '.join(str(a).removeprefix('NVML_') for a in arg_names)})"
        if fn is None or None in args:
            out.append((family, shown, None, served))
            continue
        out.append((family, shown, lambda h, fn=fn, args=args: fn(h, *args), served))
    return out


@dataclass
class ProbeResult:
    family: str
    call: str
    served_as: str
    answer: str  # "ok", NVML's error name, "pynvml lacks it"
    value: Any = None
    p50_us: float | None = None
    max_us: float | None = None


def error_name(exc: Exception) -> str:
    if isinstance(exc, n.NVMLError):
        text = str(exc)
        code = getattr(exc, "value", None)
        names = {
            getattr(n, k): k.removeprefix("NVML_ERROR_")
            for k in dir(n)
            if k.startswith("NVML_ERROR_") and isinstance(getattr(n, k), int)
        }
        return names.get(code, text)
    return type(exc).__name__ + ": " + str(exc)[:80]


def time_call(reader: Callable[[Any], Any], handle: Any, repeat: int) -> tuple[Any, list[float]]:
    times = []
    value = None
    for _ in range(repeat):
        start = time.perf_counter()
        value = reader(handle)
        times.append(time.perf_counter() - start)
    return value, times


def probe_card(handle: Any, repeat: int) -> list[ProbeResult]:
    results = []
    for family, name, reader, served in probe_calls():
        if reader is None:
            results.append(ProbeResult(family, name, served, "pynvml lacks it"))
            continue
        # The sampling calls (PCIe throughput ~20 ms) are timed once, not `repeat` times.
        count = 1 if "Throughput" in name or "Samples" in name else repeat
        try:
            value, times = time_call(reader, handle, count)
        except Exception as exc:  # noqa: BLE001 - every refusal is a finding, not a failure
            results.append(ProbeResult(family, name, served, error_name(exc)))
            continue
        results.append(
            ProbeResult(
                family,
                name,
                served,
                "ok",
                plain(value),
                percentile(times, 0.5) * 1e6,
                max(times) * 1e6,
            )
        )
    return results


FIELD_VALUE_TYPES = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}
SERVED_FIELD_IDS = {82, 83, 94, 185, 186, 230}


def field_value_scan(handle: Any) -> tuple[list[dict[str, Any]], float]:
    """Every NVML_FI_DEV_* id pynvml knows, read through nvmlDeviceGetFieldValues in batches:
    which answer, with what; and the seconds the whole scan took."""
    ids = sorted(
        {
            (getattr(n, k), k)
            for k in dir(n)
            if k.startswith("NVML_FI_DEV_") and isinstance(getattr(n, k), int)
        }
    )
    seen: dict[int, str] = {}
    for fid, name in ids:
        seen.setdefault(fid, name)
    out = []
    start = time.perf_counter()
    id_list = sorted(seen)
    for i in range(0, len(id_list), 32):
        batch = id_list[i : i + 32]
        try:
            values = n.nvmlDeviceGetFieldValues(handle, batch)
        except n.NVMLError as exc:
            out.extend({"id": fid, "name": seen[fid], "answer": error_name(exc)} for fid in batch)
            continue
        for fid, v in zip(batch, values, strict=False):
            ret = getattr(v, "nvmlReturn", 1)
            if ret != 0:
                answer = error_name(n.NVMLError(ret))
                out.append({"id": fid, "name": seen[fid], "answer": answer})
                continue
            union = getattr(v, "value", None)
            member = FIELD_VALUE_TYPES.get(getattr(v, "valueType", 1), "ullVal")
            value = getattr(union, member, None) if union is not None else None
            out.append({"id": fid, "name": seen[fid], "answer": "ok", "value": value})
    return out, time.perf_counter() - start


GPM_METRICS = [
    "GRAPHICS_UTIL",
    "SM_UTIL",
    "SM_OCCUPANCY",
    "INTEGER_UTIL",
    "ANY_TENSOR_UTIL",
    "DFMA_TENSOR_UTIL",
    "HMMA_TENSOR_UTIL",
    "IMMA_TENSOR_UTIL",
    "DRAM_BW_UTIL",
    "FP64_UTIL",
    "FP32_UTIL",
    "FP16_UTIL",
    "PCIE_TX_PER_SEC",
    "PCIE_RX_PER_SEC",
    "NVLINK_TOTAL_RX_PER_SEC",
    "NVLINK_TOTAL_TX_PER_SEC",
]


def gpm_read(handle: Any, interval: float) -> dict[str, Any]:
    """Two GPM samples `interval` apart and every metric of GPM_METRICS between them."""
    if not _fn("nvmlGpmQueryDeviceSupport"):
        return {"answer": "pynvml lacks GPM"}
    try:
        support = n.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice
    except n.NVMLError as exc:
        return {"answer": error_name(exc)}
    if not support:
        return {"answer": "not supported by this card"}
    ids = [(name, getattr(n, f"NVML_GPM_METRIC_{name}", None)) for name in GPM_METRICS]
    ids = [(name, mid) for name, mid in ids if mid is not None]
    first = n.nvmlGpmSampleAlloc()
    second = n.nvmlGpmSampleAlloc()
    try:
        t0 = time.perf_counter()
        n.nvmlGpmSampleGet(handle, first)
        sample_us = (time.perf_counter() - t0) * 1e6
        time.sleep(interval)
        n.nvmlGpmSampleGet(handle, second)
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(ids)
        request.sample1 = first
        request.sample2 = second
        for i, (_, mid) in enumerate(ids):
            request.metrics[i].metricId = mid
        t1 = time.perf_counter()
        n.nvmlGpmMetricsGet(request)
        metrics_us = (time.perf_counter() - t1) * 1e6
        values = {}
        for i, (name, _) in enumerate(ids):
            m = request.metrics[i]
            values[name] = (
                round(m.value, 3) if m.nvmlReturn == 0 else error_name(n.NVMLError(m.nvmlReturn))
            )
        return {
            "answer": "ok",
            "sample_get_us": round(sample_us, 1),
            "metrics_get_us": round(metrics_us, 1),
            "values": values,
        }
    except n.NVMLError as exc:
        return {"answer": error_name(exc)}
    finally:
        for sample in (first, second):
            with contextlib.suppress(n.NVMLError):
                n.nvmlGpmSampleFree(sample)


# --- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    started: float = field(default_factory=time.time)
    environment: dict[str, str] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    def render(self) -> str:
        lines = [
            "# rigwatch on a real NVIDIA driver",
            "",
            *(f"- {k}: {v}" for k, v in self.environment.items()),
            f"- run took {time.time() - self.started:.0f} s",
            "",
        ]
        verdict = "all checks passed"
        if self.broken:
            verdict = "some steps could not run"
        elif self.failures:
            verdict = f"{len(self.failures)} check(s) found a difference"
        lines += [f"**Result: {verdict}.**", ""]
        if self.failures:
            lines += ["Differences:", *(f"- {f}" for f in self.failures), ""]
        if self.broken:
            lines += ["Steps that could not run:", *(f"- {b}" for b in self.broken), ""]
        for title, body in self.sections:
            lines += [f"## {title}", "", body.rstrip(), ""]
        return "\n".join(lines)


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


@contextlib.contextmanager
def step(report: Report, name: str) -> Iterator[None]:
    log(f"step: {name}")
    start = time.monotonic()
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - a broken step is reported, the run goes on
        report.broken.append(f"{name}: {type(exc).__name__}: {exc}")
        report.raw.setdefault("tracebacks", []).append(traceback.format_exc())
        log(f"step {name} failed: {exc}")
    finally:
        report.raw.setdefault("step_seconds", {})[name] = round(time.monotonic() - start, 2)


def bracket(exporter: Exporter, smi: NvidiaSmi, fields: list[str]):
    """A scrape, nvidia-smi's query, a scrape: the moment nvidia-smi read lies between."""
    before = exporter.scrape()
    rows = smi.query_gpu(fields)
    after = exporter.scrape()
    return before, rows, after


def comparison_section(
    report: Report,
    title: str,
    exporter: Exporter,
    smi: NvidiaSmi,
    field_list: list[Field],
    details: dict[str, dict[str, str]],
) -> None:
    names = sorted({name for f in field_list for name in f.smi if not name.startswith("q:")})
    names = sorted(set(names) | {"uuid", "pci.bus_id"})
    before, rows, after = bracket(exporter, smi, names)
    served_names = before.names() | after.names()
    header = details.get("", {})
    body = []
    all_rows = []
    for row in rows:
        bus = normal_bus_id(row.get("pci.bus_id", "0:0:0.0"))
        comparisons = compare_card(
            field_list, before, row, after, details.get(bus, {}), header, smi.valid, served_names
        )
        all_rows.append({"card": row.get("uuid"), "rows": [c.__dict__ for c in comparisons]})
        body.append(f"Card {row.get('uuid')} at {bus}:\n")
        body.append(
            table(
                ["field", "nvidia-smi", "its value", "rigwatch", "tolerance", "verdict"],
                [
                    [c.field, c.smi_name, c.smi, c.rigwatch, c.tolerance, c.verdict]
                    for c in comparisons
                ],
            )
        )
        for c in comparisons:
            if c.failed:
                report.failures.append(
                    f"{title}: {c.field}: nvidia-smi {c.smi!r}, "
                    f"rigwatch {c.rigwatch!r} ({c.verdict})"
                )
        counts: dict[str, int] = {}
        for c in comparisons:
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
        body.append("\n" + ", ".join(f"{v}: {k}" for k, v in sorted(counts.items())) + "\n")
    if not rows:
        report.failures.append(f"{title}: nvidia-smi listed no card")
    report.raw.setdefault("comparisons", {})[title] = all_rows
    report.add(title, "\n".join(body))


def scrape_health(report: Report, scrape: Scrape) -> None:
    """Whatever the card refuses costs its own series only: every collector succeeded and
    every card is up."""
    rows = [
        [f"collector {lab['collector']} succeeded", value == 1]
        for lab, value in scrape.values("rigwatch_scrape_collector_success")
    ]
    rows += [
        [f"GPU {lab['gpu']} up", value == 1] for lab, value in scrape.values("rigwatch_gpu_up")
    ]
    if not rows:
        report.failures.append("the scrape has no collector success or GPU up series")
    for what, ok in rows:
        if not ok:
            report.failures.append(f"scrape health: {what} is false")
    report.add(
        "The scrape's health with the card's refusals",
        table(["check", "result"], [[what, "ok" if ok else "FAIL"] for what, ok in rows]),
    )


def handles() -> list[Any]:
    return [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]


def probe_section(report: Report, exporter: Exporter, repeat: int) -> None:
    scrape = exporter.scrape()
    served = scrape.names()
    results_by_card = []
    for index, handle in enumerate(handles()):
        results = probe_card(handle, repeat)
        results_by_card.append(results)
        uuid = n.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        rows = []
        for r in results:
            how = ""
            if r.answer not in ("ok", "pynvml lacks it") and r.served_as:
                # A family can have several sources (one clock refused, the others served),
                # so this is shown, not judged; the comparisons judge the values.
                present = bool(scrape.values(r.served_as, uuid=uuid))
                how = "family has series" if present else "no series"
            elif r.answer == "ok" and r.served_as:
                how = "served" if r.served_as in served else "served by an off collector"
            elif r.answer == "ok":
                how = "NOT SERVED"
            value = json.dumps(r.value)[:60] if r.value is not None else ""
            rows.append(
                [
                    r.family,
                    r.call,
                    r.answer,
                    value,
                    fmt(round(r.p50_us, 1)) if r.p50_us is not None else "",
                    fmt(round(r.max_us, 1)) if r.max_us is not None else "",
                    r.served_as or "—",
                    how,
                ]
            )
        report.add(
            f"NVML calls on GPU {index}: answers, cost, and what rigwatch serves",
            f"Each call timed {repeat}× (sampling calls once); µs per call.\n\n"
            + table(
                ["family", "call", "answer", "value", "p50 µs", "max µs", "rigwatch", "shown"],
                rows,
            ),
        )
        fields, seconds = field_value_scan(handle)
        answered = [f for f in fields if f["answer"] == "ok"]
        unserved = [f for f in answered if f["id"] not in SERVED_FIELD_IDS]
        report.add(
            f"Field values on GPU {index}",
            f"{len(fields)} field ids asked in batches of 32 ({seconds * 1000:.1f} ms for all); "
            f"{len(answered)} answered, {len(unserved)} of them not served by rigwatch:\n\n"
            + table(
                ["id", "name", "value", "served"],
                [
                    [
                        f["id"],
                        f["name"],
                        f.get("value"),
                        "yes" if f["id"] in SERVED_FIELD_IDS else "no",
                    ]
                    for f in answered
                ],
            ),
        )
        report.raw.setdefault("field_values", []).append(fields)
        refused = [r for r in results if r.answer not in ("ok", "pynvml lacks it")]
        report.add(
            f"What GPU {index} refuses",
            "\n".join(f"- `{r.call}`: {r.answer}" for r in refused) or "nothing",
        )
    report.raw["probe"] = [[r.__dict__ for r in results] for results in results_by_card]
    fake_scenario(report)


def fake_scenario(report: Report) -> None:
    """The cards as a simulated-NVML scenario (tests/fake_nvml's format), for calibrating it."""
    devices = []
    for handle in handles():

        def get(fn: str, *args: Any, handle: Any = handle) -> Any:
            try:
                value = getattr(n, fn)(handle, *args)
            except Exception:  # noqa: BLE001
                return None
            return value.decode() if isinstance(value, bytes) else value

        mem = get("nvmlDeviceGetMemoryInfo")
        util = get("nvmlDeviceGetUtilizationRates")
        remap = get("nvmlDeviceGetRemappedRows")
        pci = get("nvmlDeviceGetPciInfo")
        devices.append(
            {
                "name": get("nvmlDeviceGetName"),
                "uuid": get("nvmlDeviceGetUUID"),
                "pci_bus_id": plain(pci.busId) if pci else None,
                "serial": get("nvmlDeviceGetSerial"),
                "temperature_c": get("nvmlDeviceGetTemperature", 0),
                "temperature_slowdown_c": get("nvmlDeviceGetTemperatureThreshold", 1),
                "temperature_shutdown_c": get("nvmlDeviceGetTemperatureThreshold", 0),
                "temperature_memory_max_c": get("nvmlDeviceGetTemperatureThreshold", 2),
                "temperature_gpu_max_c": get("nvmlDeviceGetTemperatureThreshold", 3),
                "power_mw": get("nvmlDeviceGetPowerUsage"),
                "power_limit_mw": get("nvmlDeviceGetEnforcedPowerLimit"),
                "power_default_limit_mw": get("nvmlDeviceGetPowerManagementDefaultLimit"),
                "energy_mj": get("nvmlDeviceGetTotalEnergyConsumption"),
                "utilization_gpu_percent": util.gpu if util else None,
                "utilization_memory_percent": util.memory if util else None,
                "memory_total_bytes": mem.total if mem else None,
                "memory_used_bytes": mem.used if mem else None,
                "clocks_mhz": {
                    k: get("nvmlDeviceGetClockInfo", i)
                    for k, i in (("graphics", 0), ("sm", 1), ("memory", 2), ("video", 3))
                },
                "max_clocks_mhz": {
                    k: get("nvmlDeviceGetMaxClockInfo", i)
                    for k, i in (("graphics", 0), ("sm", 1), ("memory", 2), ("video", 3))
                },
                "pstate": get("nvmlDeviceGetPerformanceState"),
                "pcie": {
                    "gen": get("nvmlDeviceGetCurrPcieLinkGeneration"),
                    "max_gen": get("nvmlDeviceGetMaxPcieLinkGeneration"),
                    "width": get("nvmlDeviceGetCurrPcieLinkWidth"),
                    "max_width": get("nvmlDeviceGetMaxPcieLinkWidth"),
                    "replay_counter": get("nvmlDeviceGetPcieReplayCounter"),
                },
                "remapped_rows": None
                if remap is None
                else dict(
                    zip(("correctable", "uncorrectable", "pending", "failure"), remap, strict=False)
                ),
                "compute_capability": get("nvmlDeviceGetCudaComputeCapability"),
                "fan_count": get("nvmlDeviceGetNumFans"),
            }
        )
    report.raw["scenario"] = {"devices": devices}


def scrape_section(report: Report, exporter: Exporter, scrapes: int) -> None:
    stats = scrape_loop(exporter.proc.pid, exporter.port, scrapes, PROMETHEUS_HEADERS)
    floor = run_floor_reader(dict(os.environ), scrapes)
    ratio = stats.p50_ms / floor.stats.p50_ms if floor.stats.p50_ms else float("nan")
    rows = [
        ["scrape p50 (kept-alive, gzip)", f"{stats.p50_ms:.2f} ms"],
        ["scrape p99", f"{stats.p99_ms:.2f} ms"],
        ["CPU per scrape", f"{stats.cpu_ms_per_scrape:.2f} ms"],
        ["series per scrape", stats.series],
        ["body", f"{stats.body_kb:.1f} kB ({stats.encoding})"],
        ["RSS after the loop", f"{stats.rss_mb:.1f} MB"],
        ["floor p50 (bare reads)", f"{floor.stats.p50_ms:.2f} ms"],
        [
            "floor NVML part p50",
            f"{floor.stats.nvml_p50_ms:.2f} ms ({floor.stats.nvml_calls} calls)",
        ],
        ["floor host part p50", f"{floor.stats.host_p50_ms:.2f} ms"],
        ["scrape p50 / floor p50", f"{ratio:.2f}×"],
    ]
    report.add(
        f"The scrape on this driver ({scrapes} scrapes, {floor.devices} card(s))",
        table(["measure", "value"], rows),
    )
    report.raw["scrape"] = {"stats": stats.__dict__, "floor": floor.stats.__dict__, "ratio": ratio}


@dataclass
class LoadTrace:
    at: list[float] = field(default_factory=list)
    utilization: list[float] = field(default_factory=list)
    power: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)
    process_memory: list[float] = field(default_factory=list)


def expected_run_name(command: list[str]) -> str:
    scripts = [os.path.basename(a) for a in command if a.endswith(".py")]
    return scripts[0] if scripts else os.path.basename(command[0])


def workload_section(
    report: Report,
    exporter: Exporter,
    smi: NvidiaSmi,
    command: list[str],
    details: dict[str, dict[str, str]],
    fall_timeout: float,
) -> None:
    idle = exporter.scrape()
    uuid = info_uuid(idle)
    baseline = idle.value("rigwatch_gpu_utilization_ratio", uuid=uuid) or 0.0
    log(f"workload: {' '.join(command)}")
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    checks: list[tuple[str, bool, str]] = []
    trace = LoadTrace()
    output: list[str] = []
    try:
        line = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            output.append(line.rstrip())
            if line.strip() == "ready":
                break
        if line.strip() != "ready":
            raise RuntimeError(f"the workload never got ready: {' | '.join(output)[-400:]}")
        ready_at = time.time()
        pid = proc.pid
        name = psutil.Process(pid).name()
        user = psutil.Process(pid).username()
        created = psutil.Process(pid).create_time()
        compared = False
        gpm_done = False
        seen_series: dict[str, Any] = {}
        while proc.poll() is None:
            scrape = exporter.scrape()
            trace.at.append(scrape.at)
            for attr, metric_name in (
                ("utilization", "rigwatch_gpu_utilization_ratio"),
                ("power", "rigwatch_gpu_power_watts"),
                ("energy", "rigwatch_gpu_energy_joules_total"),
            ):
                value = scrape.value(metric_name, uuid=uuid)
                getattr(trace, attr).append(value if value is not None else float("nan"))
            mine = scrape.values("rigwatch_gpu_process_memory_bytes", pid=str(pid))
            trace.process_memory.append(mine[0][1] if mine else float("nan"))
            if mine and "memory" not in seen_series:
                seen_series["memory"] = mine[0][0]
            start_series = scrape.values("rigwatch_gpu_process_start_time_seconds", pid=str(pid))
            if start_series:
                seen_series["start"] = start_series[0]
            tensor = scrape.value("rigwatch_gpu_pipe_activity_ratio", uuid=uuid, pipe="tensor")
            if tensor is not None:
                seen_series["tensor"] = max(tensor, seen_series.get("tensor", 0.0))
            sm_series = scrape.values("rigwatch_gpu_process_sm_utilization_ratio", pid=str(pid))
            if sm_series:
                seen_series["sm"] = sm_series[0]
            if not compared and time.time() - ready_at > 3:
                compared = True
                comparison_section(
                    report,
                    "nvidia-smi and rigwatch under load",
                    exporter,
                    smi,
                    [f for f in FIELDS if f.dynamic],
                    details,
                )
                before = exporter.scrape()
                apps = smi.compute_apps()
                after = exporter.scrape()
                process_checks(checks, before, after, apps, pid)
            if not gpm_done and compared:
                gpm_done = True
                report.raw["gpm_under_load"] = [gpm_read(h, 1.0) for h in handles()]
            time.sleep(0.5)
        ended_at = time.time()
        for line in (proc.stdout.read() if proc.stdout else "").splitlines():
            output.append(line)
        labels = seen_series.get("memory", {})
        checks.append(
            (
                "a memory series for the workload's pid",
                bool(labels),
                f"labels {labels}" if labels else "never seen",
            )
        )
        checks.append(
            (
                "process label is the process's name",
                labels.get("process") == name,
                f"{labels.get('process')!r} vs psutil {name!r}",
            )
        )
        checks.append(
            (
                "user label is its owner",
                labels.get("user") == user,
                f"{labels.get('user')!r} vs {user!r}",
            )
        )
        start = seen_series.get("start")
        run_expected = expected_run_name(command)
        checks.append(
            (
                "start-time series: run name and start time",
                bool(start)
                and start[0].get("run") == run_expected
                and abs(start[1] - created) < 1.5,
                f"run {start[0].get('run')!r} (expected {run_expected!r}), start {start[1]:.1f} "
                f"vs psutil {created:.1f}"
                if start
                else "never seen",
            )
        )
        checks.append(
            (
                "per-process SM utilisation series",
                "sm" in seen_series,
                f"{seen_series['sm'][1]:.2f}" if "sm" in seen_series else "never seen",
            )
        )
        direct = (report.raw.get("gpm_under_load") or [{}])[0]
        if direct.get("answer") == "ok":
            # The card has GPM: the exporter's gpm collector must have seen the tensor cores.
            tensor = seen_series.get("tensor")
            checks.append(
                (
                    "the gpm collector's tensor activity under load (above 30 %)",
                    tensor is not None and tensor >= 0.3,
                    f"peak {tensor:.2f}; read directly {direct['values'].get('ANY_TENSOR_UTIL')} %"
                    if tensor is not None
                    else "no rigwatch_gpu_pipe_activity_ratio{pipe=tensor} series",
                )
            )
        peak = max((u for u in trace.utilization if u == u), default=float("nan"))
        checks.append(
            ("utilisation rose above 50 %", peak >= 0.5, f"peak {peak:.2f} from {baseline:.2f}")
        )
        energy_check(checks, trace)

        def fallen() -> bool:
            scrape = exporter.scrape()
            util = scrape.value("rigwatch_gpu_utilization_ratio", uuid=uuid)
            gone = not scrape.values("rigwatch_gpu_process_memory_bytes", pid=str(pid))
            return util is not None and util <= baseline + 0.10 and gone

        try:
            wait_until(fallen, timeout=fall_timeout, interval=0.5, what="the card to fall idle")
            checks.append(
                (
                    "utilisation fell and the pid's series went after the workload ended",
                    True,
                    f"back within 0.10 of {baseline:.2f} after {time.time() - ended_at:.1f} s",
                )
            )
        except TimeoutError:
            checks.append(
                (
                    "utilisation fell and the pid's series went after the workload ended",
                    False,
                    f"not within {fall_timeout:.0f} s",
                )
            )
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            proc.wait(10)
    for label, ok, detail in checks:
        if not ok:
            report.failures.append(f"workload: {label}: {detail}")
    report.add(
        "A real workload",
        f"`{' '.join(command)}` ({len(trace.at)} scrapes while it ran); its output: "
        f"`{' | '.join(output)[-300:]}`\n\n"
        + table(
            ["check", "result", "detail"], [[c, "ok" if ok else "FAIL", d] for c, ok, d in checks]
        ),
    )
    report.raw["load_trace"] = trace.__dict__


def info_uuid(scrape: Scrape) -> str:
    found = scrape.values("rigwatch_gpu_info")
    if not found:
        raise RuntimeError("the exporter serves no rigwatch_gpu_info")
    return found[0][0]["uuid"]


def process_checks(
    checks: list[tuple[str, bool, str]], before: Scrape, after: Scrape, apps: list[dict], pid: int
) -> None:
    mine = [a for a in apps if a.get("pid") == str(pid)]
    served = [
        v / MIB
        for s in (before, after)
        for _, v in s.values("rigwatch_gpu_process_memory_bytes", pid=str(pid))
    ]
    if not mine:
        checks.append(("nvidia-smi lists the workload", False, f"compute apps: {apps}"))
        return
    smi_mib = smi_number(mine[0].get("used_memory"))
    ok = bool(served) and smi_mib is not None and min(served) - 2 <= smi_mib <= max(served) + 2
    checks.append(
        (
            "process memory vs nvidia-smi compute-apps (±2 MiB)",
            ok,
            f"nvidia-smi {smi_mib} MiB, rigwatch {', '.join(f'{v:.1f}' for v in served)} MiB",
        )
    )


def energy_check(checks: list[tuple[str, bool, str]], trace: LoadTrace) -> None:
    """The energy counter's rise over the load against the power readings integrated."""
    points = [
        (t, p, e)
        for t, p, e in zip(trace.at, trace.power, trace.energy, strict=True)
        if p == p and e == e
    ]
    if len(points) < 4:
        checks.append(("energy counter against power", False, f"{len(points)} usable scrapes"))
        return
    integrated = sum(
        (t2 - t1) * (p1 + p2) / 2
        for (t1, p1, _), (t2, p2, _) in zip(points, points[1:], strict=False)
    )
    counted = points[-1][2] - points[0][2]
    ratio = counted / integrated if integrated else float("nan")
    checks.append(
        (
            "energy counter rise vs power integrated (±15 %)",
            0.85 <= ratio <= 1.15,
            f"{counted:.0f} J counted, {integrated:.0f} J from power, ratio {ratio:.3f}",
        )
    )


def environment(report: Report, smi: NvidiaSmi) -> None:
    report.environment["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report.environment["host"] = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)"
    report.environment["python"] = platform.python_version()
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        report.environment["nvidia-ml-py"] = version("nvidia-ml-py")
    drv = n.nvmlSystemGetDriverVersion()
    report.environment["driver"] = drv.decode() if isinstance(drv, bytes) else drv
    report.environment["cards"] = "; ".join(smi.run("-L").strip().splitlines())
    report.environment["nvidia-smi fields"] = str(len(smi.valid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rigwatch against a real NVIDIA driver")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi command")
    parser.add_argument(
        "--workload",
        default=f"{sys.executable} bench/real_gpu_load.py --seconds 40 --gib 4",
        help="the GPU workload's command line (prints 'ready' when loaded, ends by itself)",
    )
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--probe-repeat", type=int, default=20)
    parser.add_argument("--fall-timeout", type=float, default=30.0)
    parser.add_argument("--exporter-arg", action="append", default=[])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report()
    smi_command = shlex.split(args.nvidia_smi)
    if smi_command[0].endswith(".py"):
        smi_command = [sys.executable, *smi_command]
    exporter: Exporter | None = None
    smi: NvidiaSmi | None = None
    details: dict[str, dict[str, str]] = {}

    def save() -> None:
        (args.out / "real-gpu-report.md").write_text(report.render())
        (args.out / "real-gpu-raw.json").write_text(json.dumps(report.raw, indent=1, default=str))

    with step(report, "NVML and nvidia-smi"):
        n.nvmlInit()
        smi = NvidiaSmi(smi_command)
        environment(report, smi)
        details = smi.details()
        with contextlib.suppress(Exception):
            (args.out / "nvidia-smi-q.txt").write_text(smi.run("-q"))
    if smi is None:
        save()
        print(report.render())
        return 2
    try:
        with step(report, "start the exporter"):
            exporter = Exporter(args.exporter_arg)
            wait_until(
                lambda: exporter.scrape().value("rigwatch_nvml_up") == 1,
                timeout=60,
                interval=0.5,
                what="rigwatch_nvml_up 1",
            )
        if exporter is None:
            raise RuntimeError("no exporter")
        with step(report, "compare idle"):
            comparison_section(
                report, "nvidia-smi and rigwatch, idle", exporter, smi, FIELDS, details
            )
            scrape_health(report, exporter.scrape())
        save()
        with step(report, "NVML probe"):
            probe_section(report, exporter, args.probe_repeat)
            report.raw["gpm_idle"] = [gpm_read(h, 0.5) for h in handles()]
        save()
        with step(report, "scrape cost"):
            scrape_section(report, exporter, args.scrapes)
        save()
        if not args.workload:
            report.add("A real workload", "left out (`--workload ''`)")
        with step(report, "workload"):
            if args.workload:
                workload_section(
                    report, exporter, smi, shlex.split(args.workload), details, args.fall_timeout
                )
        gpm_rows = []
        for when in ("gpm_idle", "gpm_under_load"):
            for index, reading in enumerate(report.raw.get(when, [])):
                values = reading.get("values", {})
                if "sample_get_us" in reading:
                    values = {
                        "nvmlGpmSampleGet µs": reading["sample_get_us"],
                        "nvmlGpmMetricsGet µs": reading["metrics_get_us"],
                        **values,
                    }
                gpm_rows.append(
                    [
                        when.removeprefix("gpm_").replace("_", " "),
                        index,
                        reading["answer"],
                        ", ".join(f"{k} {v}" for k, v in values.items()) or "—",
                    ]
                )
        report.add(
            "GPM (profiling metrics) read directly",
            table(["when", "GPU", "answer", "values"], gpm_rows) if gpm_rows else "not read",
        )
    finally:
        if exporter is not None:
            output = exporter.stop()
            (args.out / "exporter.log").write_text(output)
            lines = [ln for ln in output.splitlines() if ln.strip()]
            report.add(
                "The exporter's log",
                f"{len(lines)} lines; the first 40:\n\n```\n" + "\n".join(lines[:40]) + "\n```",
            )
        with contextlib.suppress(Exception):
            n.nvmlShutdown()
        save()
    print(report.render())
    if report.broken:
        return 2
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
