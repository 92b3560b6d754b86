"""The energy dashboard: GPU kWh and cost today, over 7 and 30 days, per rig and per card,
priced by the bot's own setting (rigwatch_bot_energy_price_per_kwh, scraped from the bot)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from .dashboard import dashboard
from .panels import CARD_LEGEND, Column, Query, table_panel, timeseries_panel
from .queries import GPU

FILE_NAME = "energy.json"
UID = "rigwatch-energy"

WATTS = f"gpu:rigwatch_energy_watts:rate1m{{{GPU}}}"
ESTIMATED = f'gpu:rigwatch_energy_watts:rate1m{{{GPU}, estimated="true"}}'
# Joules over the dashboard's (or panel's) range, as the alert bot counts them: the increase
# of NVML's energy counter (measured), or on cards without one their power integrated over the
# time it was read (estimated): the recorded power sampled every STEP seconds of the range and
# summed × STEP, a step counting only where the newest sample is under a minute old. So time
# before a card's first sample, a rig switched off and a gap in the data add nothing (never
# the range's average × its length). STEP is the shipped evaluation interval (prometheus.yml);
# alert_bot/runs/energy.py does the same with a step scaled to the window.
STEP = 15
FRESH_ESTIMATED = f"({ESTIMATED} and (timestamp({ESTIMATED}) > time() - 60))"
JOULES = (
    f"label_replace(increase(rigwatch_gpu_energy_joules_total{{{GPU}}}[$__range]),"
    ' "estimated", "false", "", "")'
    f" or sum_over_time({FRESH_ESTIMATED}[$__range:{STEP}s]) * {STEP}"
)
PRICE = "max(avg_over_time(rigwatch_bot_energy_price_per_kwh[$__range]))"
WINDOWS = (("today", "now/d"), ("7 days", "7d"), ("30 days", "30d"))


def _kwh(by: str) -> str:
    return f"sum by ({by}) ({JOULES}) / 3.6e6"


def _columns(by: str, per_card: bool) -> list[Column]:
    kwh = _kwh(by)
    columns = [
        Column("kwh", "GPU energy", "kwatth", kwh),
        Column("cost", "Cost (kWh × price)", "none", f"({kwh}) * on () group_left () {PRICE}"),
    ]
    if not per_card:
        columns.append(
            Column(
                "estimated",
                "Cards estimated from power",
                "none",
                f"count by ({by}) ({ESTIMATED})",
            )
        )
    return columns


def _table(title: str, window: str, by: str, per_card: bool):
    panel = table_panel(
        title,
        "none",
        _columns(by, per_card),
        size=(8, 8),
        description=(
            "GPU energy from each card's NVML energy counter; cards without one (Pascal and "
            "older) are integrated from power readings over the time they were read (estimated). "
            "Cost uses the "
            "alert bot's energy.price_per_kwh (tariffs: their average over the window)."
        ),
    )
    return panel.time_from(window)


def build() -> Dashboard:
    board = dashboard(
        UID,
        "rigwatch / Energy and cost",
        "GPU energy (kWh) and its cost per rig and per card: today, 7 days and 30 days.",
        with_gpu=True,
    )
    board.with_row(Row("Per rig"))
    for label, window in WINDOWS:
        board.with_panel(_table(f"Per rig, {label}", window, "rig, instance", per_card=False))
    board.with_row(Row("Per card"))
    for label, window in WINDOWS:
        board.with_panel(
            _table(f"Per card, {label}", window, "rig, instance, gpu, estimated", per_card=True)
        )
    board.with_row(Row("Power"))
    board.with_panel(
        timeseries_panel(
            "GPU power behind the energy figures",
            "watt",
            [Query("watts", WATTS, CARD_LEGEND + " estimated={{estimated}}")],
        )
    )
    board.with_panel(
        timeseries_panel(
            "GPU power per rig",
            "watt",
            [Query("rig_watts", f"sum by (rig, instance) ({WATTS})", "{{rig}}")],
        )
    )
    return board
