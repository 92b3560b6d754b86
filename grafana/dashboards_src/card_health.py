"""The card-health dashboard: each card's wear signals, this week against four weeks ago (the
figures of the alert bot's weekly report), and their hourly course over five weeks, from the
recording rules of prometheus/rules/wear.yml and the error and memory counters."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from .dashboard import dashboard
from .panels import CARD_LEGEND, Column, Query, percent_timeseries, table_panel, timeseries_panel
from .queries import CARD_BY, GPU, HOST, gpu

FILE_NAME = "card-health.json"
UID = "rigwatch-health"

LOADED = f"gpu:rigwatch_loaded_temperature_celsius:avg1h{{{GPU}}}"
THROTTLED = f"gpu:rigwatch_throttled_share:avg1h{{{GPU}}}"
FANS = f"gpu:rigwatch_loaded_fan_speed_ratio:avg1h{{{GPU}}}"
LINK = f"gpu:rigwatch_pcie_link_degraded_share:avg1h{{{GPU}}}"
REPLAY = gpu("rigwatch_gpu_pcie_replay_errors_total")
AER = f'rigwatch_pci_aer_events_total{{{HOST}, severity="correctable"}}'
REMAPPED = gpu("rigwatch_gpu_remapped_rows")
RETIRED = gpu("rigwatch_gpu_retired_pages")
WEEK = "7d"  # the tables' range: $__range is a week in them
# The recorded series have one point an hour; the graphs ask for no finer steps.
HOURLY = "1h"
CARD_LABELS = "rig, instance, gpu"


def _mean_change(title: str, recorded: str, unit: str, description: str):
    """A table per card: the week's mean of an hourly recorded series, the same four weeks
    earlier, and the change."""
    this = f"avg by ({CARD_BY}) (avg_over_time({recorded}[$__range]))"
    before = f"avg by ({CARD_BY}) (avg_over_time({recorded}[$__range] offset 28d))"
    return table_panel(
        title,
        unit,
        [
            Column("this_week", "This week", unit, this),
            Column("four_weeks_ago", "Four weeks ago", unit, before),
            Column("change", "Change", unit, f"{this} - {before}"),
        ],
        size=(12, 8),
        description=description,
    ).time_from(WEEK)


def _weekly_errors(counter: str, by: str) -> str:
    """The four weeks before this one, a week's average (four one-week windows)."""
    weeks = " + ".join(
        f"sum by ({by}) (increase({counter}[$__range] offset {n * 7}d))" for n in range(1, 5)
    )
    return f"({weeks}) / 4"


def _errors_table(title: str, counter: str, by: str, description: str):
    return table_panel(
        title,
        "none",
        [
            Column(
                "this_week", "This week", "none", f"sum by ({by}) (increase({counter}[$__range]))"
            ),
            Column(
                "weekly_before", "A week, four weeks before", "none", _weekly_errors(counter, by)
            ),
        ],
        size=(12, 8),
        description=description,
    ).time_from(WEEK)


def _hourly_max(gauge: str) -> str:
    """A count gauge at hourly steps: the most it held within each step, so a rise between
    two steps is not missed."""
    return f"sum by ({CARD_LABELS}) (max_over_time({gauge}[$__rate_interval]))"


def build() -> Dashboard:
    board = dashboard(
        UID,
        "rigwatch / Card health",
        "Each card's wear, weeks ahead: temperature and fan duty under load, throttled share, "
        "PCIe link fallbacks and errors and retired memory, this week against four weeks ago "
        "and over five weeks.",
        with_gpu=True,
    ).time("now-35d", "now")
    board.with_row(Row("This week against four weeks ago"))
    board.with_panel(
        _mean_change(
            "Temperature under load",
            LOADED,
            "celsius",
            "Mean of the hourly temperature at 60 % of the power limit or more. 3 °C more is in "
            "the bot's weekly report, 5 °C fires GpuCoolingDegrading: clean the heatsink, renew "
            "the paste.",
        )
    )
    board.with_panel(
        _mean_change(
            "Throttled share of busy time",
            THROTTLED,
            "percentunit",
            "Share of the busy minutes (utilisation 50 % or more) slowed by heat or the power "
            "brake. 5 points more (and 10 % or more) is in the weekly report; 10 points more "
            "and 20 % fires GpuThrottlingRising.",
        )
    )
    board.with_panel(
        _mean_change(
            "Fan duty under load",
            FANS,
            "percentunit",
            "Mean of the hourly fan duty the card asks for at 60 % of its power limit or more "
            "(NVML's requested speed). 10 points more for the same power is in the weekly "
            "report: the fans work harder for the same heat.",
        )
    )
    board.with_panel(
        _mean_change(
            "PCIe link below its best, share of busy time",
            LINK,
            "percentunit",
            "Share of the busy minutes the link ran below its maximum width or generation. 2 % "
            "or more, and twice four weeks ago, is in the weekly report: a riser or slot that "
            "falls back now and then. A link down for 10 minutes alerts at once.",
        )
    )
    board.with_panel(
        _errors_table(
            "PCIe replay errors",
            REPLAY,
            CARD_BY,
            "Link errors the card corrected: 50 or more and twice the weekly average before is "
            "in the weekly report. A riser, its cable or the slot is wearing.",
        )
    )
    board.with_panel(
        _errors_table(
            "AER correctable events",
            AER,
            "rig, instance, pci_bus_id",
            "Correctable PCIe errors the kernel counted per bus address (the card's own, or its "
            "port's).",
        )
    )
    board.with_panel(
        table_panel(
            "Memory taken out of use",
            "none",
            [
                Column(
                    "remapped",
                    "Rows remapped this week",
                    "none",
                    f"sum by ({CARD_BY}) (increase({REMAPPED}[$__range]))",
                ),
                Column(
                    "retired",
                    "Pages retired this week",
                    "none",
                    f"sum by ({CARD_BY}) (increase({RETIRED}[$__range]))",
                ),
            ],
            size=(24, 6),
            description="Any new one is in the weekly report and fires GpuMemoryWearing.",
        ).time_from(WEEK)
    )
    board.with_row(Row("Over five weeks"))
    board.with_panel(
        timeseries_panel(
            "Temperature under load (hourly mean)",
            "celsius",
            [Query("loaded", f"avg_over_time({LOADED}[$__rate_interval])", CARD_LEGEND)],
        ).interval(HOURLY)
    )
    for title, ref, recorded in (
        ("Throttled share of busy time (hourly)", "throttled", THROTTLED),
        ("Fan duty under load (hourly mean)", "fans", FANS),
        ("PCIe link below its best (share of busy time, hourly)", "link", LINK),
    ):
        board.with_panel(
            percent_timeseries(
                title, [Query(ref, f"avg_over_time({recorded}[$__rate_interval])", CARD_LEGEND)]
            ).interval(HOURLY)
        )
    board.with_panel(
        timeseries_panel(
            "PCIe replay errors per hour",
            "none",
            [
                Query(
                    "replay",
                    f"sum by ({CARD_LABELS}) (rate({REPLAY}[$__rate_interval])) * 3600",
                    CARD_LEGEND,
                )
            ],
        ).interval(HOURLY)
    )
    board.with_panel(
        timeseries_panel(
            "AER correctable events per hour",
            "none",
            [
                Query(
                    "aer",
                    f"sum by (rig, instance, pci_bus_id) (rate({AER}[$__rate_interval])) * 3600",
                    "{{rig}} {{pci_bus_id}}",
                )
            ],
        ).interval(HOURLY)
    )
    board.with_panel(
        timeseries_panel(
            "Memory rows remapped and pages retired",
            "none",
            [
                Query("remapped_rows", _hourly_max(REMAPPED), CARD_LEGEND + " rows"),
                Query("retired_pages", _hourly_max(RETIRED), CARD_LEGEND + " pages"),
            ],
            size=(24, 8),
        ).interval(HOURLY)
    )
    return board
