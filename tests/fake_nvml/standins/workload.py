"""A stand-in for bench/real_gpu_load.py on the simulated library: it puts its own pid on a card
of the scenario (FAKE_NVML_SCENARIO) with GPU memory and SM utilisation, raises the card's
utilisation, power and clocks, advances its energy counter by the power it draws while it
runs, then puts the card back to idle (energy kept) and leaves.

    python3 tests/fake_nvml/standins/workload.py --seconds 6 --gib 2 [--device 0]

Prints `ready` once the scenario shows the load and `done` at the end, as the real workload does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.support import write_scenario  # noqa: E402

BUSY = {
    "utilization_gpu_percent": 97,
    "utilization_memory_percent": 61,
    "power_mw": 310000,
    "pstate": 0,
    "clock_event_reasons": 0,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args(argv)
    path = Path(os.environ["FAKE_NVML_SCENARIO"])
    scenario = json.loads(path.read_text())
    card = scenario["devices"][args.device]
    idle = {
        key: card.get(key) for key in (*BUSY, "clocks_mhz", "processes", "memory_used_bytes", "gpm")
    }
    held = int(args.gib * 2**30)
    card.update(BUSY)
    if card.get("gpm") is not None:  # a Hopper card: its tensor cores at work too
        card["gpm"] = {**card["gpm"], "sm_util": 95.0, "any_tensor_util": 92.0}
    card["clocks_mhz"] = dict(card.get("max_clocks_mhz") or card.get("clocks_mhz") or {})
    card["memory_used_bytes"] = (card.get("memory_used_bytes") or 0) + held
    card["processes"] = [
        *(card.get("processes") or []),
        {"pid": os.getpid(), "used_memory_bytes": held, "sm_util_percent": 95},
    ]
    write_scenario(path, scenario)
    print("ready", flush=True)
    end = time.monotonic() + args.seconds
    last = time.monotonic()
    try:
        while time.monotonic() < end:
            time.sleep(0.1)  # a pace: the simulated card advances ten times a second
            now = time.monotonic()
            if card.get("energy_mj") is not None:  # a card without the counter keeps none
                card["energy_mj"] = int(card["energy_mj"] + BUSY["power_mw"] * (now - last))
            last = now
            write_scenario(path, scenario)
    finally:
        card.update(idle)
        write_scenario(path, scenario)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
