"""The host detail dashboard: the rig's host, CPU by mode and core, load, memory and swap,
filesystems, disk and network IO, temperatures with their thresholds."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from .dashboard import dashboard
from .panels import Column, Query, percent_timeseries, stat_panel, table_panel, timeseries_panel
from .queries import (
    CPU_BUSY_BY_CORE,
    CPU_COUNT,
    FILESYSTEM_USED,
    HOST,
    PSEUDO_FS,
    UPTIME,
    host,
    rate,
)

FILE_NAME = "host-detail.json"
UID = "rigwatch-host"

CPU_BY_MODE = (
    "sum by (rig, instance, mode) ("
    + rate("rigwatch_host_cpu_seconds_total", f'{HOST}, mode!="idle"')
    + f")\n/ on (rig, instance) group_left ()\n{CPU_COUNT}"
)
# (refId, counter, legend) of each network panel.
NETWORK_TRAFFIC = [("receive", "receive_bytes", "in"), ("transmit", "transmit_bytes", "out")]
NETWORK_PACKETS = [
    ("packets_in", "receive_packets", "packets in"),
    ("packets_out", "transmit_packets", "packets out"),
    ("errors_in", "receive_errors", "errors in"),
    ("errors_out", "transmit_errors", "errors out"),
]


def _cpu(board: Dashboard) -> None:
    board.with_row(Row("CPU"))
    board.with_panel(
        timeseries_panel(
            "CPU by mode",
            "percentunit",
            [Query("busy_by_mode", CPU_BY_MODE, "{{rig}} {{mode}}")],
            minimum=0,
        )
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
        .fill_opacity(30)
    )
    board.with_panel(
        percent_timeseries(
            "CPU by core", [Query("busy_by_core", CPU_BUSY_BY_CORE, "{{rig}} cpu {{cpu}}")]
        )
    )
    board.with_panel(
        timeseries_panel(
            "Load",
            "short",
            [
                Query("load1", host("rigwatch_host_load1"), "{{rig}} 1 min"),
                Query("load5", host("rigwatch_host_load5"), "{{rig}} 5 min"),
                Query("load15", host("rigwatch_host_load15"), "{{rig}} 15 min"),
                Query("cpus", CPU_COUNT, "{{rig}} CPUs"),
            ],
            minimum=0,
        )
    )
    board.with_panel(stat_panel("Up for", "s", [Query("uptime", UPTIME, "{{rig}}")]))


def _memory(board: Dashboard) -> None:
    board.with_row(Row("Memory"))
    memory_used = (
        f"{host('rigwatch_host_memory_total_bytes')} - "
        f"{host('rigwatch_host_memory_available_bytes')}"
    )
    board.with_panel(
        timeseries_panel(
            "Memory and swap",
            "bytes",
            [
                Query(
                    "memory_total", host("rigwatch_host_memory_total_bytes"), "{{rig}} memory total"
                ),
                Query("memory_used", memory_used, "{{rig}} memory used"),
                Query("swap_total", host("rigwatch_host_swap_total_bytes"), "{{rig}} swap total"),
                Query("swap_used", host("rigwatch_host_swap_used_bytes"), "{{rig}} swap used"),
            ],
            minimum=0,
        )
    )
    board.with_panel(
        timeseries_panel(
            "Swapping",
            "Bps",
            [
                Query("swap_in", rate("rigwatch_host_swap_in_bytes_total"), "{{rig}} in"),
                Query("swap_out", rate("rigwatch_host_swap_out_bytes_total"), "{{rig}} out"),
            ],
            minimum=0,
        )
    )


def _disks(board: Dashboard) -> None:
    board.with_row(Row("Disks"))
    board.with_panel(
        table_panel(
            "Filesystems",
            "bytes",
            [
                Column(
                    "size", "Size", "bytes", host("rigwatch_host_filesystem_size_bytes", PSEUDO_FS)
                ),
                Column(
                    "available",
                    "Available",
                    "bytes",
                    host("rigwatch_host_filesystem_avail_bytes", PSEUDO_FS),
                ),
                Column("used", "Used", "percentunit", FILESYSTEM_USED),
                Column(
                    "readonly",
                    "Read-only",
                    "bool_yes_no",
                    host("rigwatch_host_filesystem_readonly", PSEUDO_FS),
                ),
            ],
            size=(12, 8),
        )
    )
    board.with_panel(
        percent_timeseries(
            "Filesystem use", [Query("used", FILESYSTEM_USED, "{{rig}} {{mountpoint}}")]
        )
    )
    board.with_panel(
        timeseries_panel(
            "Disk throughput",
            "Bps",
            [
                Query(
                    "read",
                    rate("rigwatch_host_disk_read_bytes_total"),
                    "{{rig}} {{device}} read",
                ),
                Query(
                    "written",
                    rate("rigwatch_host_disk_written_bytes_total"),
                    "{{rig}} {{device}} written",
                ),
            ],
            minimum=0,
        )
    )
    board.with_panel(
        percent_timeseries(
            "Disk busy",
            [Query("busy", rate("rigwatch_host_disk_io_time_seconds_total"), "{{rig}} {{device}}")],
        )
    )


def _network(board: Dashboard) -> None:
    board.with_row(Row("Network"))
    for title, unit, counters in (
        ("Network traffic", "Bps", NETWORK_TRAFFIC),
        ("Network packets and errors", "pps", NETWORK_PACKETS),
    ):
        queries = [
            Query(
                ref,
                rate(f"rigwatch_host_network_{counter}_total"),
                f"{{{{rig}}}} {{{{device}}}} {legend}",
            )
            for ref, counter, legend in counters
        ]
        board.with_panel(timeseries_panel(title, unit, queries, minimum=0))


def _sensors(board: Dashboard) -> None:
    board.with_row(Row("Sensors"))
    dashed = common_builders.LineStyle().fill("dash").dash([10, 10]).build()
    board.with_panel(
        timeseries_panel(
            "Temperatures and their thresholds",
            "celsius",
            [
                Query(
                    "temperature",
                    host("rigwatch_host_temperature_celsius"),
                    "{{rig}} {{chip}} {{sensor}}",
                ),
                Query(
                    "high",
                    f"{host('rigwatch_host_temperature_high_celsius')} > 0",
                    "{{rig}} {{chip}} {{sensor}} high",
                ),
                Query(
                    "critical",
                    f"{host('rigwatch_host_temperature_critical_celsius')} > 0",
                    "{{rig}} {{chip}} {{sensor}} critical",
                ),
            ],
            size=(16, 9),
        ).override_by_regexp(
            ".* (high|critical)$", [DynamicConfigValue(id_val="custom.lineStyle", value=dashed)]
        )
    )
    board.with_panel(
        timeseries_panel(
            "Fans",
            "rotrpm",
            [Query("fan", host("rigwatch_host_fan_speed_rpm"), "{{rig}} {{chip}} {{sensor}}")],
            size=(8, 9),
            minimum=0,
        )
    )


def build() -> Dashboard:
    board = dashboard(
        UID,
        "rigwatch / Host detail",
        "The rig's host: CPU by mode and core, load, memory and swap, filesystems, disk and "
        "network IO, temperatures with their thresholds.",
        with_gpu=False,
    )
    _cpu(board)
    _memory(board)
    _disks(board)
    _network(board)
    _sensors(board)
    return board
