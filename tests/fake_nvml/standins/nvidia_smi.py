"""A stand-in for `nvidia-smi` on a machine without a GPU: it answers the queries
bench/real_gpu.py makes from the simulated library's scenario file (FAKE_NVML_SCENARIO), read
directly, not through NVML, so the check compares the exporter with the scenario itself.

Answers: `-L`, `--help-query-gpu`, `--query-gpu=... --format=csv,noheader,nounits`,
`--query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=...`, `-q [-d ...]`.
`NVIDIA_SMI_STANDIN_SKEW=field=delta,...` adds delta to a numeric field's answer, so a test can
check that the comparison notices a difference.
"""

from __future__ import annotations

import json
import os
import sys

MIB = 2**20
NA = "[N/A]"
NOT_SUPPORTED = "[Not Supported]"


def scenario() -> dict:
    with open(os.environ["FAKE_NVML_SCENARIO"]) as f:
        return json.load(f)


def cards() -> list[dict]:
    return [d for d in scenario()["devices"] if not d.get("uncounted")]


def number(value, scale: float = 1.0, digits: int = 0) -> str:
    if value is None:
        return NOT_SUPPORTED
    value = value / scale
    return f"{value:.{digits}f}" if digits else str(int(value))


def flag(value, yes: str = "Yes", no: str = "No") -> str:
    return NA if value is None else (yes if value else no)


def pcie(card: dict, key: str):
    return (card.get("pcie") or {}).get(key)


def ecc(card: dict, key: str):
    return (card.get("ecc") or {}).get(key)


def remapped(card: dict, key: str):
    return (card.get("remapped_rows") or {}).get(key)


def query_fields(sc: dict) -> dict[str, object]:
    """--query-gpu name → a function of the card giving nvidia-smi's text."""
    fields = {
        "index": lambda c, i: str(i),
        "name": lambda c, i: c["name"],
        "uuid": lambda c, i: c["uuid"],
        "pci.bus_id": lambda c, i: c["pci_bus_id"],
        "driver_version": lambda c, i: sc["driver_version"],
        "serial": lambda c, i: c.get("serial") or NA,
        "vbios_version": lambda c, i: c.get("vbios_version") or NA,
        "temperature.gpu": lambda c, i: number(c.get("temperature_c")),
        "temperature.memory": lambda c, i: number(c.get("memory_temperature_c")),
        "power.draw": lambda c, i: number(c.get("power_mw"), 1000, 2),
        "enforced.power.limit": lambda c, i: number(c.get("power_limit_mw"), 1000, 2),
        "power.limit": lambda c, i: number(c.get("power_limit_mw"), 1000, 2),
        "power.default_limit": lambda c, i: number(
            c.get("power_default_limit_mw", c.get("power_limit_mw")), 1000, 2
        ),
        "power.min_limit": lambda c, i: number(c.get("power_min_limit_mw"), 1000, 2),
        "power.max_limit": lambda c, i: number(c.get("power_max_limit_mw"), 1000, 2),
        "memory.used": lambda c, i: number(c.get("memory_used_bytes"), MIB),
        "memory.total": lambda c, i: number(c.get("memory_total_bytes"), MIB),
        "memory.reserved": lambda c, i: number(c.get("memory_reserved_bytes", 0), MIB),
        "pstate": lambda c, i: NA if c.get("pstate") in (None, 32) else f"P{c['pstate']}",
        "fan.speed": lambda c, i: number((c.get("fan_speeds_percent") or [None])[0]),
        "utilization.gpu": lambda c, i: number(c.get("utilization_gpu_percent")),
        "utilization.memory": lambda c, i: number(c.get("utilization_memory_percent")),
        "ecc.mode.current": lambda c, i: NA if c.get("ecc") is None else "Enabled",
        "pcie.link.gen.current": lambda c, i: number(pcie(c, "gen")),
        "pcie.link.gen.max": lambda c, i: number(pcie(c, "max_gen")),
        "pcie.link.width.current": lambda c, i: number(pcie(c, "width")),
        "pcie.link.width.max": lambda c, i: number(pcie(c, "max_width")),
        "clocks_event_reasons.active": lambda c, i: (
            NA if c.get("clock_event_reasons") is None else f"0x{c['clock_event_reasons']:016x}"
        ),
        "persistence_mode": lambda c, i: flag(
            c.get("persistence_mode", True), "Enabled", "Disabled"
        ),
        "compute_cap": lambda c, i: (
            f"{c.get('compute_capability_major', 8)}.{c.get('compute_capability_minor', 9)}"
        ),
        "ecc.mode.pending": lambda c, i: NA if c.get("ecc") is None else "Enabled",
        "mig.mode.current": lambda c, i: (
            NA if not c.get("mig_mode") else flag(c["mig_mode"]["current"], "Enabled", "Disabled")
        ),
        "compute_mode": lambda c, i: (
            "Default",
            "Exclusive_Thread",
            "Prohibited",
            "Exclusive_Process",
        )[c.get("compute_mode") or 0],
        "inforom.img": lambda c, i: c.get("inforom_image_version") or NA,
        "inforom.oem": lambda c, i: (c.get("inforom_versions") or {}).get("oem") or NA,
        "inforom.ecc": lambda c, i: (c.get("inforom_versions") or {}).get("ecc") or NA,
        "clocks.applications.graphics": lambda c, i: number(
            (c.get("applications_clocks_mhz") or {}).get("graphics")
        ),
        "clocks.applications.memory": lambda c, i: number(
            (c.get("applications_clocks_mhz") or {}).get("memory")
        ),
        "clocks.default_applications.graphics": lambda c, i: number(
            (c.get("default_applications_clocks_mhz") or {}).get("graphics")
        ),
        "encoder.stats.sessionCount": lambda c, i: number(
            (c.get("encoder_stats") or {}).get("sessions")
        ),
        "remapped_rows.correctable": lambda c, i: number(remapped(c, "correctable")),
        "remapped_rows.uncorrectable": lambda c, i: number(remapped(c, "uncorrectable")),
        "remapped_rows.pending": lambda c, i: flag(remapped(c, "pending")),
        "remapped_rows.failure": lambda c, i: flag(remapped(c, "failure")),
    }
    for clock, key in (("gr", "graphics"), ("sm", "sm"), ("mem", "memory"), ("video", "video")):
        fields[f"clocks.{clock}"] = lambda c, i, k=key: number((c.get("clocks_mhz") or {}).get(k))
        fields[f"clocks.max.{clock}"] = lambda c, i, k=key: number(
            (c.get("max_clocks_mhz") or {}).get(k)
        )
    for kind in ("corrected", "uncorrected"):
        for scope in ("volatile", "aggregate"):
            fields[f"ecc.errors.{kind}.{scope}.total"] = lambda c, i, k=f"{kind}_{scope}": number(
                ecc(c, k)
            )
    return fields


def skewed(name: str, text: str) -> str:
    for item in filter(None, os.environ.get("NVIDIA_SMI_STANDIN_SKEW", "").split(",")):
        field, _, delta = item.partition("=")
        if field == name and not text.startswith("["):
            return f"{float(text) + float(delta):g}"
    return text


def query_gpu(names: list[str]) -> None:
    sc = scenario()
    fields = query_fields(sc)
    for name in names:
        if name not in fields:
            print(f'Field "{name}" is not a valid field to query.', file=sys.stderr)
            sys.exit(2)
    for i, card in enumerate(cards()):
        print(", ".join(skewed(name, fields[name](card, i)) for name in names))


def compute_apps() -> None:
    lines = []
    for card in cards():
        for proc in card.get("processes") or []:
            if proc.get("kind", "compute") != "compute":
                continue
            try:
                with open(f"/proc/{proc['pid']}/comm") as f:
                    name = f.read().strip()
            except OSError:
                name = "[Not Found]"
            used = proc.get("used_memory_bytes")
            memory = NA if used is None else str(used // MIB)
            lines.append(f"{proc['pid']}, {name}, {memory}, {card['uuid']}")
    print("\n".join(lines) if lines else "No running processes found")


def details() -> None:
    sc = scenario()
    cuda = sc.get("cuda_driver_version") or 0
    print("==============NVSMI LOG==============\n")
    print(f"Driver Version                            : {sc['driver_version']}")
    print(f"CUDA Version                              : {cuda // 1000}.{cuda % 1000 // 10}\n")
    print(f"Attached GPUs                             : {len(cards())}")
    relative = os.environ.get("NVIDIA_SMI_STANDIN_TLIMIT") == "1"
    for card in cards():
        domain, _, rest = card["pci_bus_id"].partition(":")
        print(f"GPU {int(domain, 16):08X}:{rest.upper()}")
        print("    Temperature")
        rows = [
            ("GPU Current Temp", card.get("temperature_c")),
            ("GPU Shutdown Temp", card.get("temperature_shutdown_c")),
            ("GPU Slowdown Temp", card.get("temperature_slowdown_c")),
            ("GPU Max Operating Temp", card.get("temperature_gpu_max_c")),
            ("Memory Current Temp", card.get("memory_temperature_c")),
            ("Memory Max Operating Temp", card.get("temperature_memory_max_c")),
        ]
        if relative and card.get("temperature_gpu_max_c") is not None:
            # As driver 580 prints them: relative to T.Limit, the maximum operating temperature.
            limit = card["temperature_gpu_max_c"]
            rows = [
                rows[0],
                ("GPU T.Limit Temp", limit - card["temperature_c"]),
                *((f"{label[:-5]} T.Limit Temp", limit - v) for label, v in rows[1:4]),
                rows[4],
            ]
        for label, value in rows:
            print(f"        {label:<34}: {'N/A' if value is None else f'{value} C'}")


def main(argv: list[str]) -> int:
    if argv == ["-L"]:
        for i, card in enumerate(cards()):
            print(f"GPU {i}: {card['name']} (UUID: {card['uuid']})")
        return 0
    if argv == ["--help-query-gpu"]:
        print('List of valid properties to query for the switch "--query-gpu=":\n')
        for name in query_fields(scenario()):
            print(f'"{name}"\nThe simulated value of {name}.\n')
        return 0
    if argv and argv[0] == "-q":
        details()
        return 0
    for arg in argv:
        if arg.startswith("--query-gpu="):
            query_gpu(arg.split("=", 1)[1].split(","))
            return 0
        if arg.startswith("--query-compute-apps="):
            compute_apps()
            return 0
    print(f"nvidia-smi stand-in: unsupported arguments {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
