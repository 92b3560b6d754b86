"""The GPU detail dashboard: one card over time, its temperatures against its thresholds,
clocks, P-state, throttle reasons, power and energy, PCIe, errors, what the SMs and tensor
cores do (GPM) and processes."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .bus import detail_panels
from .dashboard import dashboard
from .panels import (
    CARD_LEGEND,
    Column,
    Query,
    label_stat,
    percent_timeseries,
    stat_panel,
    state_timeline_panel,
    table_panel,
    timeseries_panel,
    value_mapping,
)
from .queries import CARD_BY, GPU, critical_xids, gpu, host, per_card, rate, volatile_ecc

FILE_NAME = "gpu-detail.json"
UID = "rigwatch-gpu"


def _series(ref: str, metric: str, what: str, extra: str = "") -> Query:
    """One gpu metric of the shown cards (extra matchers), its legend "GPU <index> <what>"."""
    return Query(ref, gpu(metric, extra), "GPU {{gpu}} " + what)


COUNT_STEPS = (("green", None), ("red", 1))
# NVML's P-states: 0 (fastest) to 15, 32 when unknown.
PSTATE_MAPPING = value_mapping(
    {**{str(n): (f"P{n}", None) for n in range(16)}, "32": ("unknown", None)}, indexed=True
)
THROTTLE_MAPPING = value_mapping({"0": ("off", "transparent"), "1": ("active", "orange")})

NOW_STATS = [
    ("temperature", "Temperature", "celsius", "rigwatch_gpu_temperature_celsius"),
    (
        "memory_temperature",
        "Memory temperature",
        "celsius",
        "rigwatch_gpu_memory_temperature_celsius",
    ),
    ("power", "Power", "watt", "rigwatch_gpu_power_watts"),
    ("fan", "Fan", "percentunit", "rigwatch_gpu_fan_speed_ratio"),
]
HEALTH_STATS = [
    (
        "uncorrectable_ecc",
        "Uncorrectable ECC errors (since driver load)",
        volatile_ecc("uncorrected"),
    ),
    ("corrected_ecc", "Corrected ECC errors (since driver load)", volatile_ecc("corrected")),
    ("remapped_rows", "Remapped rows", f"sum by ({CARD_BY}) ({gpu('rigwatch_gpu_remapped_rows')})"),
    ("remap_pending", "Remap pending", gpu("rigwatch_gpu_remapped_rows_pending")),
]


def _card_stat(title: str, unit: str, ref: str, expr: str, **options: Any) -> stat.Panel:
    """A 6-wide stat of one expression with a value per card."""
    return stat_panel(title, unit, [Query(ref, expr, CARD_LEGEND)], size=(6, 4), **options)


def _now(board: Dashboard) -> None:
    board.with_row(Row("Now"))
    board.with_panel(
        label_stat(
            "Card",
            Query(
                "card", gpu("rigwatch_gpu_info"), "{{rig}} GPU {{gpu}}: {{name}} ({{pci_bus_id}})"
            ),
            size=(8, 4),
            description="The card's name and PCI address.",
        )
    )
    for ref, title, unit, metric in NOW_STATS:
        board.with_panel(
            stat_panel(title, unit, [Query(ref, per_card(gpu(metric)), CARD_LEGEND)], size=(4, 4))
        )
    for ref, title, expr in HEALTH_STATS:
        board.with_panel(_card_stat(title, "short", ref, per_card(expr), thresholds=COUNT_STEPS))
    energy = f"increase({gpu('rigwatch_gpu_energy_joules_total')}[$__range]) / 3600000"
    board.with_panel(_card_stat("Energy used in the shown period", "kwatth", "energy", energy))
    xids, title = critical_xids("rig, gpu"), "Critical Xids (since exporter start)"
    board.with_panel(_card_stat(title, "short", "critical_xids", xids, thresholds=COUNT_STEPS))
    board.with_panel(
        label_stat(
            "Driver",
            Query("driver", host("rigwatch_driver_info"), "{{rig}}: {{driver_version}}"),
            size=(6, 4),
        )
    )
    pstate = per_card(gpu("rigwatch_gpu_pstate"))
    board.with_panel(_card_stat("P-state", "none", "pstate", pstate, mappings=[PSTATE_MAPPING]))


def _over_time(board: Dashboard) -> None:
    board.with_row(Row("Over time"))
    board.with_panel(
        timeseries_panel(
            "Temperature and the card's thresholds",
            "celsius",
            [
                _series("core", "rigwatch_gpu_temperature_celsius", "core"),
                _series("memory", "rigwatch_gpu_memory_temperature_celsius", "memory"),
                _series(
                    "slowdown", "rigwatch_gpu_temperature_slowdown_threshold_celsius", "slowdown"
                ),
                _series(
                    "shutdown", "rigwatch_gpu_temperature_shutdown_threshold_celsius", "shutdown"
                ),
                _series(
                    "memory_limit",
                    "rigwatch_gpu_memory_temperature_threshold_celsius",
                    "memory limit",
                ),
            ],
        )
    )
    board.with_panel(
        percent_timeseries(
            "Utilisation",
            [
                _series("compute", "rigwatch_gpu_utilization_ratio", "compute"),
                _series("memory_bus", "rigwatch_gpu_memory_utilization_ratio", "memory bus"),
                _series("encoder", "rigwatch_gpu_encoder_utilization_ratio", "encoder"),
                _series("decoder", "rigwatch_gpu_decoder_utilization_ratio", "decoder"),
            ],
        )
    )
    board.with_panel(
        timeseries_panel(
            "Memory",
            "bytes",
            [
                _series("used", "rigwatch_gpu_memory_used_bytes", "used"),
                _series("total", "rigwatch_gpu_memory_total_bytes", "total"),
            ],
            minimum=0,
        )
    )
    board.with_panel(
        timeseries_panel(
            "Power and its limit",
            "watt",
            [
                _series("draw", "rigwatch_gpu_power_watts", "draw"),
                _series("limit", "rigwatch_gpu_power_limit_watts", "limit"),
                Query(
                    "from_energy",
                    rate("rigwatch_gpu_energy_joules_total", GPU),
                    "GPU {{gpu}} average from energy",
                ),
            ],
            minimum=0,
        )
    )
    board.with_panel(
        timeseries_panel(
            "Clocks",
            "hertz",
            [
                _series("clock", "rigwatch_gpu_clock_hertz", "{{clock}}"),
                _series("clock_max", "rigwatch_gpu_clock_max_hertz", "{{clock}} max"),
            ],
        )
    )
    board.with_panel(
        timeseries_panel(
            "Fans and P-state",
            "percentunit",
            [
                _series("fan", "rigwatch_gpu_fan_speed_ratio", "fan {{fan}}"),
                _series("pstate", "rigwatch_gpu_pstate", "P-state"),
            ],
        ).override_by_regexp(
            ".*P-state",
            [
                DynamicConfigValue(id_val="unit", value="none"),
                DynamicConfigValue(id_val="custom.axisPlacement", value=common.AxisPlacement.RIGHT),
                DynamicConfigValue(id_val="custom.drawStyle", value=common.GraphDrawStyle.LINE),
                DynamicConfigValue(
                    id_val="custom.lineInterpolation", value=common.LineInterpolation.STEP_AFTER
                ),
            ],
        )
    )
    board.with_panel(
        state_timeline_panel(
            "Throttle reasons",
            [_series("throttle_reasons", "rigwatch_gpu_throttle_reason_active", "{{reason}}")],
            size=(24, 9),
            mappings=[THROTTLE_MAPPING],
            description=(
                "Why the clocks are held back. gpu_idle and sw_power_cap are normal; "
                "hw_thermal, sw_thermal, hw_slowdown and hw_power_brake cost speed."
            ),
        )
    )


def _pcie_and_errors(board: Dashboard) -> None:
    board.with_row(Row("PCIe and errors"))
    board.with_panel(
        timeseries_panel(
            "PCIe link against the card's maximum",
            "short",
            [
                _series("width", "rigwatch_gpu_pcie_link_width", "width"),
                _series("max_width", "rigwatch_gpu_pcie_link_max_width", "max width"),
                _series("gen", "rigwatch_gpu_pcie_link_generation", "gen"),
                _series("max_gen", "rigwatch_gpu_pcie_link_max_generation", "max gen"),
            ],
            size=(8, 8),
            minimum=0,
        )
    )
    board.with_panel(
        timeseries_panel(
            "PCIe throughput",
            "Bps",
            [
                _series(
                    "throughput", "rigwatch_gpu_pcie_throughput_bytes_per_second", "{{direction}}"
                )
            ],
            size=(8, 8),
            description="Needs the exporter's pcie_throughput collector (off by default).",
        )
    )
    board.with_panel(
        timeseries_panel(
            "PCIe replays and Xid events",
            "cps",
            [
                Query(
                    "pcie_replays",
                    rate("rigwatch_gpu_pcie_replay_errors_total", GPU),
                    "GPU {{gpu}} PCIe replays",
                ),
                Query(
                    "xids", rate("rigwatch_gpu_xid_errors_total", GPU), "GPU {{gpu}} Xid {{xid}}"
                ),
            ],
            size=(8, 8),
            minimum=0,
        )
    )
    for panel in detail_panels():
        board.with_panel(panel)


GPM_NOTE = (
    "Hopper's profiling metrics (the exporter's gpm collector), averaged between scrapes; "
    "no data on cards before Hopper. "
)


def _inside_the_card(board: Dashboard) -> None:
    board.with_row(Row("Inside the card (GPM)"))
    board.with_panel(
        percent_timeseries(
            "Busy against working: SMs and tensor cores",
            [
                _series("utilisation", "rigwatch_gpu_utilization_ratio", "utilisation"),
                _series("sm_activity", "rigwatch_gpu_sm_activity_ratio", "SM activity"),
                _series("sm_occupancy", "rigwatch_gpu_sm_occupancy_ratio", "SM occupancy"),
                _series("tensor", "rigwatch_gpu_pipe_activity_ratio", "tensor", 'pipe="tensor"'),
            ],
            description=GPM_NOTE
            + "Utilisation counts any kernel running; SM activity how many SMs work, tensor how "
            "often the tensor cores do. Busy with tensor near 0 is a run without mixed precision.",
        )
    )
    board.with_panel(
        percent_timeseries(
            "Pipes",
            [_series("pipes", "rigwatch_gpu_pipe_activity_ratio", "{{pipe}}")],
            description=GPM_NOTE + "Which units the SMs keep busy: tensor by kind, FP64/32/16.",
        )
    )
    board.with_panel(
        percent_timeseries(
            "Memory bandwidth",
            [_series("dram", "rigwatch_gpu_dram_bandwidth_utilization_ratio", "DRAM bandwidth")],
            size=(12, 8),
            description=GPM_NOTE + "Device memory bandwidth used against its maximum.",
        )
    )
    board.with_panel(
        timeseries_panel(
            "PCIe and NVLink traffic",
            "Bps",
            [
                _series("pcie", "rigwatch_gpu_pcie_traffic_bytes_per_second", "PCIe {{direction}}"),
                _series(
                    "nvlink", "rigwatch_gpu_nvlink_traffic_bytes_per_second", "NVLink {{direction}}"
                ),
            ],
            size=(12, 8),
            minimum=0,
            description=GPM_NOTE + "Bytes per second over the PCIe link and all NVLinks.",
        )
    )


def _processes(board: Dashboard) -> None:
    board.with_row(Row("Processes"))
    board.with_panel(
        table_panel(
            "Processes on the card",
            "short",
            [
                Column("memory", "Memory", "bytes", gpu("rigwatch_gpu_process_memory_bytes")),
                Column(
                    "sm_utilisation",
                    "SM utilisation",
                    "percentunit",
                    gpu("rigwatch_gpu_process_sm_utilization_ratio"),
                ),
            ],
            size=(24, 8),
            hide_labels=["instance"],
            description="Processes running on the card now, with the memory they hold.",
        )
    )


def build() -> Dashboard:
    board = dashboard(
        UID,
        "rigwatch / GPU detail",
        "One card over time: temperatures against its thresholds, clocks, P-state, throttle "
        "reasons, power and energy, PCIe, errors and the processes on it.",
        with_gpu=True,
    )
    _now(board)
    _over_time(board)
    _pcie_and_errors(board)
    _inside_the_card(board)
    _processes(board)
    return board
