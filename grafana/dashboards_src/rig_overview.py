"""The rig overview dashboard: every rig and card at a glance, the hosts and the firing
alerts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.models import common

from .bus import bus_table
from .dashboard import dashboard
from .panels import (
    CARD_LEGEND,
    NOT_SUPPORTED,
    Column,
    Query,
    data_link,
    percent_timeseries,
    table_panel,
    timeseries_panel,
)
from .queries import (
    CARD_BY,
    CPU_BUSY,
    FILESYSTEM_USED,
    HEADROOM,
    HOTTEST_SENSOR,
    MEMORY_USED,
    POWER_OF_LIMIT,
    UPTIME,
    card_pair,
    critical_xids,
    gpu,
    host,
    per_card,
    volatile_ecc,
)

FILE_NAME = "rig-overview.json"
UID = "rigwatch-overview"

TEMPERATURE_STEPS = (("red", None), ("orange", 0), ("green", 5))
GPU_LINK = data_link(
    "GPU detail",
    "/d/rigwatch-gpu?var-rig=${__data.fields.rig}&var-gpu=${__data.fields.gpu}&${__url_time_range}",
)
HOST_LINK = data_link(
    "Host detail", "/d/rigwatch-host?var-rig=${__data.fields.rig}&${__url_time_range}"
)
SPEED_COSTING_THROTTLES = 'reason=~"sw_thermal|hw_thermal|hw_slowdown|hw_power_brake"'

CARD_COLUMNS = [
    Column(
        "info",
        "Info",
        "none",
        f"max by (rig, instance, gpu, name) ({gpu('rigwatch_gpu_info')})",
        hidden=True,
    ),
    Column(
        "temperature", "Temperature", "celsius", per_card(gpu("rigwatch_gpu_temperature_celsius"))
    ),
    Column("headroom", "Headroom to slowdown", "celsius", per_card(HEADROOM)),
    Column(
        "utilisation", "Utilisation", "percentunit", per_card(gpu("rigwatch_gpu_utilization_ratio"))
    ),
    Column("memory_used", "Memory used", "percentunit", per_card(MEMORY_USED)),
    Column("power_of_limit", "Power of limit", "percentunit", per_card(POWER_OF_LIMIT)),
    Column("fan", "Fan", "percentunit", per_card(gpu("rigwatch_gpu_fan_speed_ratio"))),
    Column(
        "throttle_reasons",
        "Throttle reasons",
        "short",
        per_card(
            f"sum by ({CARD_BY}) "
            f"({gpu('rigwatch_gpu_throttle_reason_active', SPEED_COSTING_THROTTLES)})"
        ),
    ),
    Column("critical_xids", "Critical Xids", "short", critical_xids("rig, instance, gpu")),
    Column(
        "uncorrectable_ecc", "Uncorrectable ECC", "short", per_card(volatile_ecc("uncorrected"))
    ),
    Column(
        "pcie_lanes",
        "PCIe lanes of max",
        "percentunit",
        per_card(
            card_pair("rigwatch_gpu_pcie_link_width", "/", "rigwatch_gpu_pcie_link_max_width")
        ),
    ),
    Column("pcie_gen", "PCIe gen", "short", per_card(gpu("rigwatch_gpu_pcie_link_generation"))),
]

HOST_COLUMNS = [
    Column("cpu_busy", "CPU busy", "percentunit", CPU_BUSY),
    Column(
        "load1",
        "Load (1 min)",
        "short",
        f"max by (rig, instance) ({host('rigwatch_host_load1')})",
    ),
    Column(
        "memory_used",
        "Memory used",
        "percentunit",
        f"max by (rig, instance) (1 - {host('rigwatch_host_memory_available_bytes')}"
        f" / {host('rigwatch_host_memory_total_bytes')})",
    ),
    Column(
        "fullest_disk", "Fullest disk", "percentunit", f"max by (rig, instance) ({FILESYSTEM_USED})"
    ),
    Column("hottest_sensor", "Hottest sensor", "celsius", HOTTEST_SENSOR),
    Column("uptime", "Up for", "s", f"max by (rig, instance) ({UPTIME})"),
]


def build() -> Dashboard:
    board = dashboard(
        UID,
        "rigwatch / Rig overview",
        "Every rig and card at a glance: temperatures against each card's own threshold, load, "
        "health, the hosts, and the firing alerts.",
        with_gpu=True,
    )
    board.with_row(Row("GPUs"))
    board.with_panel(
        table_panel(
            "Every card now",
            "short",
            CARD_COLUMNS,
            size=(24, 10),
            links=[GPU_LINK],
            description=(
                "One row per card. Headroom is the card's own slowdown threshold minus its "
                f"temperature. '{NOT_SUPPORTED}' marks a field this card cannot report; "
                "throttle reasons counts thermal, slowdown and power-brake reasons active now; "
                "PCIe lanes under 100 % is a narrower link than the card supports (a riser)."
            ),
        )
    )
    board.with_panel(bus_table())
    board.with_panel(
        timeseries_panel(
            "Headroom to each card's slowdown temperature",
            "celsius",
            [Query("headroom", HEADROOM, CARD_LEGEND)],
            thresholds=TEMPERATURE_STEPS,
            description="Degrees left before the card slows itself down; under 5 is a warning.",
        ).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        )
    )
    board.with_panel(
        timeseries_panel(
            "Temperature",
            "celsius",
            [Query("temperature", gpu("rigwatch_gpu_temperature_celsius"), CARD_LEGEND)],
        )
    )
    board.with_panel(
        percent_timeseries(
            "Utilisation",
            [Query("utilisation", gpu("rigwatch_gpu_utilization_ratio"), CARD_LEGEND)],
            size=(8, 8),
        )
    )
    board.with_panel(
        timeseries_panel(
            "Power of limit",
            "percentunit",
            [Query("power_of_limit", POWER_OF_LIMIT, CARD_LEGEND)],
            size=(8, 8),
            minimum=0,
        )
    )
    board.with_panel(
        percent_timeseries(
            "Memory used", [Query("memory_used", MEMORY_USED, CARD_LEGEND)], size=(8, 8)
        )
    )
    board.with_row(Row("Hosts"))
    board.with_panel(
        table_panel("Every host now", "short", HOST_COLUMNS, size=(24, 6), links=[HOST_LINK])
    )
    board.with_panel(percent_timeseries("CPU busy", [Query("cpu_busy", CPU_BUSY, "{{rig}}")]))
    board.with_panel(
        timeseries_panel(
            "Hottest host sensor",
            "celsius",
            [Query("hottest_sensor", HOTTEST_SENSOR, "{{rig}}")],
        )
    )
    board.with_row(Row("Alerts"))
    board.with_panel(
        table_panel(
            "Firing alerts",
            "short",
            [
                Column(
                    "firing",
                    "Firing",
                    "short",
                    'ALERTS{alertstate="firing", rig=~"$rig", alertname!="Watchdog"}',
                    hidden=True,
                )
            ],
            size=(24, 8),
            hide_labels=["alertstate"],
            description="Alerts Prometheus is firing now (the Watchdog heartbeat left out).",
        )
    )
    return board
