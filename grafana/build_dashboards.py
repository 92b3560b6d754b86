"""Generates rigwatch's Grafana dashboards (grafana/dashboards/*.json) from one description.

The JSON files are committed; run `python grafana/build_dashboards.py` after changing this
file, and `--check` (the tests do) to verify the committed files match what this produces.

Conventions every panel follows, so the tests can check them:
- datasource `${datasource}` (the pinned Prometheus uid by default), a unit on every panel;
- every query filtered by the job/rig/instance (and gpu) variables;
- `$__rate_interval` in every rate()/increase() over time series, `$__range` only in instant
  "over the shown period" stats;
- "not supported on this card" vs "no data": a per-card query is written as
  `X or on(...) rigwatch_gpu_info * NaN`, so a card that exists but lacks the field answers
  NaN, which a value mapping shows as "not supported on this card"; when nothing answers at all
  (exporter down, wrong filter) the panel shows its noValue text, "no data".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "rigwatch-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

HOST = 'job=~"$job", rig=~"$rig", instance=~"$instance"'
GPU = HOST + ', gpu=~"$gpu"'
CARD_KEY = "job, instance, gpu, uuid"
# Aggregations keep rig too, so their rows line up with the other per-card queries.
CARD_BY = "job, rig, instance, gpu, uuid"
# Memory-backed and pseudo filesystems, as in prometheus/rules/host.yml.
PSEUDO_FS = (
    'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|overlay|iso9660|autofs|nfs.*|cifs|smb.*'
    '|fuse\\\\..+|fusectl"'
)

NOT_SUPPORTED = "not supported on this card"
NO_DATA = "no data"
NAN_MAPPING = {"type": "special", "options": {"match": "nan", "result": {"text": NOT_SUPPORTED}}}
CARD_LEGEND = "{{rig}} GPU {{gpu}}"


def per_card(expr: str, by: str = "rig, instance, gpu") -> str:
    """Per-card value, NaN for a card that exists but cannot report it (see module doc)."""
    return f"max by ({by}) (\n  {expr}\n  or on ({CARD_KEY})\n  rigwatch_gpu_info{{{GPU}}} * NaN\n)"


def card_pair(left: str, operator: str, right: str) -> str:
    """Two per-card metrics of the same card combined, e.g. power over its limit."""
    return f"{left}{{{GPU}}} {operator} on ({CARD_KEY}) group_left () {right}{{{GPU}}}"


def rate(metric: str, selector: str = HOST) -> str:
    return f"rate({metric}{{{selector}}}[$__rate_interval])"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    t = {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if instant:
        t["format"] = "table"
    return t


def targets(*queries: tuple[str, str], instant: bool = False) -> list[dict]:
    return [
        target(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(queries)
    ]


class Layout:
    """Collects a dashboard's panels, placed left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1
        self.panels: list[dict] = []

    def add(self, panel: dict, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "id": self.next_id,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
            }
        )
        self.next_id += 1
        self.y += 1


def field_config(
    unit: str,
    *,
    mappings: list | None = None,
    thresholds: list | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    overrides: list | None = None,
    custom: dict | None = None,
) -> dict:
    defaults: dict = {
        "unit": unit,
        "noValue": NO_DATA,
        "mappings": [NAN_MAPPING, *(mappings or [])],
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
        "color": {"mode": "palette-classic" if not thresholds else "thresholds"},
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": overrides or []}


def panel(
    kind: str,
    title: str,
    queries: list[tuple[str, str]],
    config: dict,
    options: dict,
    *,
    description: str = "",
    instant: bool = False,
) -> dict:
    """The keys every panel type shares; the builders below add what their type needs."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(*queries, instant=instant),
        "fieldConfig": config,
        "options": options,
    }


def timeseries(
    title: str, unit: str, queries: list[tuple[str, str]], *, description: str = "", **kw
) -> dict:
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    config = field_config(unit, **kw)
    return panel("timeseries", title, queries, config, options, description=description)


def percent_timeseries(title: str, queries: list[tuple[str, str]], **kw) -> dict:
    """A timeseries of ratios, drawn on a fixed 0-100 % axis."""
    return timeseries(title, "percentunit", queries, minimum=0, maximum=1, **kw)


def stat(
    title: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    description: str = "",
    text_mode: str = "value_and_name",
    color_mode: str = "value",
    **kw,
) -> dict:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
    }
    config = field_config(unit, **kw)
    return panel("stat", title, queries, config, options, description=description, instant=True)


def label_stat(title: str, expr: str, legend: str, *, description: str = "") -> dict:
    """A stat that shows only its legend, for facts carried in labels (names, versions)."""
    return stat(
        title,
        "none",
        [(expr, legend)],
        description=description,
        text_mode="name",
        color_mode="none",
    )


def table(
    title: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    columns: dict[str, tuple[str, str]],
    hide: tuple[str, ...] = (),
    links: list | None = None,
    description: str = "",
    **kw,
) -> dict:
    """An instant table, one row per label set; columns maps 'Value #X' to (title, unit)."""
    overrides = []
    renames = {}
    for field, (name, col_unit) in columns.items():
        renames[field] = name
        props = [{"id": "unit", "value": col_unit}]
        # Overrides apply after the organize transformation, so they match the new name.
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": props})
    excluded = {"Time": True, "__name__": True, "job": True, "uuid": True}
    excluded.update({h: True for h in hide})
    config = field_config(unit, overrides=overrides, **kw)
    if links:
        config["defaults"]["links"] = links
    options = {"showHeader": True, "cellHeight": "sm"}
    result = panel("table", title, queries, config, options, description=description, instant=True)
    result["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": excluded, "renameByName": renames}},
    ]
    return result


def state_timeline(
    title: str, queries: list[tuple[str, str]], *, description: str = "", **kw
) -> dict:
    options = {
        "showValue": "never",
        "mergeValues": True,
        "rowHeight": 0.8,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    }
    config = field_config("bool_on_off", **kw)
    return panel("state-timeline", title, queries, config, options, description=description)


def query_variable(name: str, label: str, query: str, multi: bool = True) -> dict:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        # A plain string: the form every Grafana version reads for Prometheus variables.
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 3,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def variables(with_gpu: bool) -> list[dict]:
    result = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {"selected": True, "text": "Prometheus", "value": DATASOURCE_UID},
            "options": [],
            "refresh": 1,
            "hide": 0,
        },
        query_variable("job", "Job", "label_values(rigwatch_exporter_build_info, job)"),
        query_variable(
            "rig", "Rig", 'label_values(rigwatch_exporter_build_info{job=~"$job"}, rig)'
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(rigwatch_exporter_build_info{job=~"$job", rig=~"$rig"}, instance)',
        ),
    ]
    if with_gpu:
        result.append(
            query_variable(
                "gpu", "GPU", f"label_values(rigwatch_gpu_info{{{HOST}}}, gpu)", multi=True
            )
        )
    return result


def dashboard(uid: str, title: str, description: str, panels: list[dict], with_gpu: bool) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["rigwatch"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 38,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables(with_gpu)},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["rigwatch"],
                "title": "rigwatch",
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


TEMPERATURE_STEPS = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 0},
    {"color": "green", "value": 5},
]
# NVML's P-states: 0 (fastest) to 15, 32 when unknown.
PSTATE_MAPPING = {
    "type": "value",
    "options": {
        **{str(n): {"text": f"P{n}", "index": n} for n in range(16)},
        "32": {"text": "unknown", "index": 16},
    },
}
COUNT_STEPS = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
GPU_LINK = [
    {
        "title": "GPU detail",
        "url": "/d/rigwatch-gpu?var-rig=${__data.fields.rig}&var-gpu=${__data.fields.gpu}"
        "&${__url_time_range}",
    }
]
HOST_LINK = [
    {
        "title": "Host detail",
        "url": "/d/rigwatch-host?var-rig=${__data.fields.rig}&${__url_time_range}",
    }
]


def critical_xids(by: str) -> str:
    """Critical Xid events per card, 0 (not absent) for a card that has had none."""
    return (
        f'sum by ({by}) (rigwatch_gpu_xid_errors_total{{{GPU}, critical="true"}})\nor\n'
        f"max by ({by}) (rigwatch_gpu_info{{{GPU}}}) * 0"
    )


def volatile_ecc(kind: str) -> str:
    return f'rigwatch_gpu_ecc_errors_total{{{GPU}, type="{kind}", scope="volatile"}}'


# Queries more than one panel shows.
HEADROOM = card_pair(
    "rigwatch_gpu_temperature_slowdown_threshold_celsius", "-", "rigwatch_gpu_temperature_celsius"
)
POWER_OF_LIMIT = card_pair("rigwatch_gpu_power_watts", "/", "rigwatch_gpu_power_limit_watts")
MEMORY_USED = card_pair("rigwatch_gpu_memory_used_bytes", "/", "rigwatch_gpu_memory_total_bytes")
CPU_BUSY = (
    "1 - avg by (rig, instance) ("
    + rate("rigwatch_host_cpu_seconds_total", f'{HOST}, mode="idle"')
    + ")"
)
HOTTEST_SENSOR = f"max by (rig, instance) (rigwatch_host_temperature_celsius{{{HOST}}})"
UPTIME = f"time() - rigwatch_host_boot_time_seconds{{{HOST}}}"
FILESYSTEM_USED = (
    f"1 - rigwatch_host_filesystem_avail_bytes{{{HOST}, {PSEUDO_FS}}}"
    f" / rigwatch_host_filesystem_size_bytes{{{HOST}, {PSEUDO_FS}}}"
)


def rig_overview() -> dict:
    lay = Layout()
    lay.row("GPUs")
    lay.add(
        table(
            "Every card now",
            "short",
            [
                (f"max by (rig, instance, gpu, name) (rigwatch_gpu_info{{{GPU}}})", ""),
                (per_card(f"rigwatch_gpu_temperature_celsius{{{GPU}}}"), ""),
                (per_card(HEADROOM), ""),
                (per_card(f"rigwatch_gpu_utilization_ratio{{{GPU}}}"), ""),
                (per_card(MEMORY_USED), ""),
                (per_card(POWER_OF_LIMIT), ""),
                (per_card(f"rigwatch_gpu_fan_speed_ratio{{{GPU}}}"), ""),
                (
                    per_card(
                        f"sum by ({CARD_BY}) (rigwatch_gpu_throttle_reason_active{{{GPU}, "
                        'reason=~"sw_thermal|hw_thermal|hw_slowdown|hw_power_brake"})'
                    ),
                    "",
                ),
                (critical_xids("rig, instance, gpu"), ""),
                (per_card(volatile_ecc("uncorrected")), ""),
                (
                    per_card(
                        card_pair(
                            "rigwatch_gpu_pcie_link_width", "/", "rigwatch_gpu_pcie_link_max_width"
                        )
                    ),
                    "",
                ),
                (per_card(f"rigwatch_gpu_pcie_link_generation{{{GPU}}}"), ""),
            ],
            columns={
                "Value #A": ("Info", "none"),
                "Value #B": ("Temperature", "celsius"),
                "Value #C": ("Headroom to slowdown", "celsius"),
                "Value #D": ("Utilisation", "percentunit"),
                "Value #E": ("Memory used", "percentunit"),
                "Value #F": ("Power of limit", "percentunit"),
                "Value #G": ("Fan", "percentunit"),
                "Value #H": ("Throttle reasons", "short"),
                "Value #I": ("Critical Xids", "short"),
                "Value #J": ("Uncorrectable ECC", "short"),
                "Value #K": ("PCIe lanes of max", "percentunit"),
                "Value #L": ("PCIe gen", "short"),
            },
            hide=("Value #A",),
            links=GPU_LINK,
            description=(
                "One row per card. Headroom is the card's own slowdown threshold minus its "
                f"temperature. '{NOT_SUPPORTED}' marks a field this card cannot report; "
                "throttle reasons counts thermal, slowdown and power-brake reasons active now; "
                "PCIe lanes under 100 % is a narrower link than the card supports (a riser)."
            ),
        ),
        24,
        10,
    )
    lay.add(
        timeseries(
            "Headroom to each card's slowdown temperature",
            "celsius",
            [(HEADROOM, CARD_LEGEND)],
            thresholds=TEMPERATURE_STEPS,
            custom={"thresholdsStyle": {"mode": "line+area"}},
            description="Degrees left before the card slows itself down; under 5 is a warning.",
        )
    )
    lay.add(
        timeseries(
            "Temperature", "celsius", [(f"rigwatch_gpu_temperature_celsius{{{GPU}}}", CARD_LEGEND)]
        )
    )
    lay.add(
        percent_timeseries(
            "Utilisation", [(f"rigwatch_gpu_utilization_ratio{{{GPU}}}", CARD_LEGEND)]
        ),
        8,
    )
    lay.add(
        timeseries("Power of limit", "percentunit", [(POWER_OF_LIMIT, CARD_LEGEND)], minimum=0), 8
    )
    lay.add(percent_timeseries("Memory used", [(MEMORY_USED, CARD_LEGEND)]), 8)
    lay.row("Hosts")
    lay.add(
        table(
            "Every host now",
            "short",
            [
                (CPU_BUSY, ""),
                (f"max by (rig, instance) (rigwatch_host_load1{{{HOST}}})", ""),
                (
                    "max by (rig, instance) (1 - rigwatch_host_memory_available_bytes"
                    f"{{{HOST}}} / rigwatch_host_memory_total_bytes{{{HOST}}})",
                    "",
                ),
                (f"max by (rig, instance) ({FILESYSTEM_USED})", ""),
                (HOTTEST_SENSOR, ""),
                (f"max by (rig, instance) ({UPTIME})", ""),
            ],
            columns={
                "Value #A": ("CPU busy", "percentunit"),
                "Value #B": ("Load (1 min)", "short"),
                "Value #C": ("Memory used", "percentunit"),
                "Value #D": ("Fullest disk", "percentunit"),
                "Value #E": ("Hottest sensor", "celsius"),
                "Value #F": ("Up for", "s"),
            },
            links=HOST_LINK,
        ),
        24,
        6,
    )
    lay.add(percent_timeseries("CPU busy", [(CPU_BUSY, "{{rig}}")]))
    lay.add(timeseries("Hottest host sensor", "celsius", [(HOTTEST_SENSOR, "{{rig}}")]))
    lay.row("Alerts")
    lay.add(
        table(
            "Firing alerts",
            "short",
            [('ALERTS{alertstate="firing", rig=~"$rig", alertname!="Watchdog"}', "")],
            columns={"Value #A": ("Firing", "short")},
            hide=("alertstate", "Value #A"),
            description="Alerts Prometheus is firing now (the Watchdog heartbeat left out).",
        ),
        24,
        8,
    )
    return dashboard(
        "rigwatch-overview",
        "rigwatch / Rig overview",
        "Every rig and card at a glance: temperatures against each card's own threshold, load, "
        "health, the hosts, and the firing alerts.",
        lay.panels,
        with_gpu=True,
    )


def gpu_detail() -> dict:
    lay = Layout()
    lay.row("Now")
    lay.add(
        label_stat(
            "Card",
            f"rigwatch_gpu_info{{{GPU}}}",
            "{{rig}} GPU {{gpu}}: {{name}} ({{pci_bus_id}})",
            description="The card's name and PCI address.",
        ),
        8,
        4,
    )
    now_stats = [
        ("Temperature", "celsius", f"rigwatch_gpu_temperature_celsius{{{GPU}}}"),
        ("Memory temperature", "celsius", f"rigwatch_gpu_memory_temperature_celsius{{{GPU}}}"),
        ("Power", "watt", f"rigwatch_gpu_power_watts{{{GPU}}}"),
        ("Fan", "percentunit", f"rigwatch_gpu_fan_speed_ratio{{{GPU}}}"),
    ]
    for title, unit, expr in now_stats:
        lay.add(stat(title, unit, [(per_card(expr), CARD_LEGEND)]), 4, 4)
    health_stats = [
        ("Uncorrectable ECC errors (since driver load)", volatile_ecc("uncorrected")),
        ("Corrected ECC errors (since driver load)", volatile_ecc("corrected")),
        ("Remapped rows", f"sum by ({CARD_BY}) (rigwatch_gpu_remapped_rows{{{GPU}}})"),
        ("Remap pending", f"rigwatch_gpu_remapped_rows_pending{{{GPU}}}"),
    ]
    for title, expr in health_stats:
        lay.add(stat(title, "short", [(per_card(expr), CARD_LEGEND)], thresholds=COUNT_STEPS), 6, 4)
    lay.add(
        stat(
            "Energy used in the shown period",
            "kwatth",
            [
                (
                    f"increase(rigwatch_gpu_energy_joules_total{{{GPU}}}[$__range]) / 3600000",
                    CARD_LEGEND,
                )
            ],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Critical Xids (since exporter start)",
            "short",
            [(critical_xids("rig, gpu"), CARD_LEGEND)],
            thresholds=COUNT_STEPS,
        ),
        6,
        4,
    )
    lay.add(
        label_stat("Driver", f"rigwatch_driver_info{{{HOST}}}", "{{rig}}: {{driver_version}}"), 6, 4
    )
    lay.add(
        stat(
            "P-state",
            "none",
            [(per_card(f"rigwatch_gpu_pstate{{{GPU}}}"), CARD_LEGEND)],
            mappings=[PSTATE_MAPPING],
        ),
        6,
        4,
    )
    lay.row("Over time")
    lay.add(
        timeseries(
            "Temperature and the card's thresholds",
            "celsius",
            [
                (f"rigwatch_gpu_temperature_celsius{{{GPU}}}", "GPU {{gpu}} core"),
                (f"rigwatch_gpu_memory_temperature_celsius{{{GPU}}}", "GPU {{gpu}} memory"),
                (
                    f"rigwatch_gpu_temperature_slowdown_threshold_celsius{{{GPU}}}",
                    "GPU {{gpu}} slowdown",
                ),
                (
                    f"rigwatch_gpu_temperature_shutdown_threshold_celsius{{{GPU}}}",
                    "GPU {{gpu}} shutdown",
                ),
                (
                    f"rigwatch_gpu_memory_temperature_threshold_celsius{{{GPU}}}",
                    "GPU {{gpu}} memory limit",
                ),
            ],
        )
    )
    lay.add(
        percent_timeseries(
            "Utilisation",
            [
                (f"rigwatch_gpu_utilization_ratio{{{GPU}}}", "GPU {{gpu}} compute"),
                (f"rigwatch_gpu_memory_utilization_ratio{{{GPU}}}", "GPU {{gpu}} memory bus"),
                (f"rigwatch_gpu_encoder_utilization_ratio{{{GPU}}}", "GPU {{gpu}} encoder"),
                (f"rigwatch_gpu_decoder_utilization_ratio{{{GPU}}}", "GPU {{gpu}} decoder"),
            ],
        )
    )
    lay.add(
        timeseries(
            "Memory",
            "bytes",
            [
                (f"rigwatch_gpu_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} used"),
                (f"rigwatch_gpu_memory_total_bytes{{{GPU}}}", "GPU {{gpu}} total"),
            ],
            minimum=0,
        )
    )
    lay.add(
        timeseries(
            "Power and its limit",
            "watt",
            [
                (f"rigwatch_gpu_power_watts{{{GPU}}}", "GPU {{gpu}} draw"),
                (f"rigwatch_gpu_power_limit_watts{{{GPU}}}", "GPU {{gpu}} limit"),
                (rate("rigwatch_gpu_energy_joules_total", GPU), "GPU {{gpu}} average from energy"),
            ],
            minimum=0,
        )
    )
    lay.add(
        timeseries(
            "Clocks",
            "hertz",
            [
                (f"rigwatch_gpu_clock_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}}"),
                (f"rigwatch_gpu_clock_max_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}} max"),
            ],
        )
    )
    lay.add(
        timeseries(
            "Fans and P-state",
            "percentunit",
            [
                (f"rigwatch_gpu_fan_speed_ratio{{{GPU}}}", "GPU {{gpu}} fan {{fan}}"),
                (f"rigwatch_gpu_pstate{{{GPU}}}", "GPU {{gpu}} P-state"),
            ],
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".*P-state"},
                    "properties": [
                        {"id": "unit", "value": "none"},
                        {"id": "custom.axisPlacement", "value": "right"},
                        {"id": "custom.drawStyle", "value": "line"},
                        {"id": "custom.lineInterpolation", "value": "stepAfter"},
                    ],
                }
            ],
        )
    )
    lay.add(
        state_timeline(
            "Throttle reasons",
            [(f"rigwatch_gpu_throttle_reason_active{{{GPU}}}", "GPU {{gpu}} {{reason}}")],
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "off", "color": "transparent"},
                        "1": {"text": "active", "color": "orange"},
                    },
                }
            ],
            description=(
                "Why the clocks are held back. gpu_idle and sw_power_cap are normal; "
                "hw_thermal, sw_thermal, hw_slowdown and hw_power_brake cost speed."
            ),
        ),
        24,
        9,
    )
    lay.row("PCIe and errors")
    lay.add(
        timeseries(
            "PCIe link against the card's maximum",
            "short",
            [
                (f"rigwatch_gpu_pcie_link_width{{{GPU}}}", "GPU {{gpu}} width"),
                (f"rigwatch_gpu_pcie_link_max_width{{{GPU}}}", "GPU {{gpu}} max width"),
                (f"rigwatch_gpu_pcie_link_generation{{{GPU}}}", "GPU {{gpu}} gen"),
                (f"rigwatch_gpu_pcie_link_max_generation{{{GPU}}}", "GPU {{gpu}} max gen"),
            ],
            minimum=0,
        ),
        8,
    )
    lay.add(
        timeseries(
            "PCIe throughput",
            "Bps",
            [
                (
                    f"rigwatch_gpu_pcie_throughput_bytes_per_second{{{GPU}}}",
                    "GPU {{gpu}} {{direction}}",
                )
            ],
            description="Needs the exporter's pcie_throughput collector (off by default).",
        ),
        8,
    )
    lay.add(
        timeseries(
            "PCIe replays and Xid events",
            "cps",
            [
                (rate("rigwatch_gpu_pcie_replay_errors_total", GPU), "GPU {{gpu}} PCIe replays"),
                (rate("rigwatch_gpu_xid_errors_total", GPU), "GPU {{gpu}} Xid {{xid}}"),
            ],
            minimum=0,
        ),
        8,
    )
    lay.row("Processes")
    lay.add(
        table(
            "Processes on the card",
            "short",
            [
                (f"rigwatch_gpu_process_memory_bytes{{{GPU}}}", ""),
                (f"rigwatch_gpu_process_sm_utilization_ratio{{{GPU}}}", ""),
            ],
            columns={
                "Value #A": ("Memory", "bytes"),
                "Value #B": ("SM utilisation", "percentunit"),
            },
            hide=("instance",),
            description="Processes running on the card now, with the memory they hold.",
        ),
        24,
        8,
    )
    return dashboard(
        "rigwatch-gpu",
        "rigwatch / GPU detail",
        "One card over time: temperatures against its thresholds, clocks, P-state, throttle "
        "reasons, power and energy, PCIe, errors and the processes on it.",
        lay.panels,
        with_gpu=True,
    )


def host_detail() -> dict:
    lay = Layout()
    cpu_count = (
        f"count by (rig, instance) (count by (rig, instance, cpu) "
        f"(rigwatch_host_cpu_seconds_total{{{HOST}}}))"
    )
    lay.row("CPU")
    lay.add(
        timeseries(
            "CPU by mode",
            "percentunit",
            [
                (
                    "sum by (rig, instance, mode) ("
                    + rate("rigwatch_host_cpu_seconds_total", f'{HOST}, mode!="idle"')
                    + f")\n/ on (rig, instance) group_left ()\n{cpu_count}",
                    "{{rig}} {{mode}}",
                )
            ],
            minimum=0,
            custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30},
        )
    )
    lay.add(
        percent_timeseries(
            "CPU by core",
            [
                (
                    "1 - " + rate("rigwatch_host_cpu_seconds_total", f'{HOST}, mode="idle"'),
                    "{{rig}} cpu {{cpu}}",
                )
            ],
        )
    )
    lay.add(
        timeseries(
            "Load",
            "short",
            [
                (f"rigwatch_host_load1{{{HOST}}}", "{{rig}} 1 min"),
                (f"rigwatch_host_load5{{{HOST}}}", "{{rig}} 5 min"),
                (f"rigwatch_host_load15{{{HOST}}}", "{{rig}} 15 min"),
                (cpu_count, "{{rig}} CPUs"),
            ],
            minimum=0,
        )
    )
    lay.add(stat("Up for", "s", [(UPTIME, "{{rig}}")]))
    lay.row("Memory")
    lay.add(
        timeseries(
            "Memory and swap",
            "bytes",
            [
                (f"rigwatch_host_memory_total_bytes{{{HOST}}}", "{{rig}} memory total"),
                (
                    f"rigwatch_host_memory_total_bytes{{{HOST}}} - "
                    f"rigwatch_host_memory_available_bytes{{{HOST}}}",
                    "{{rig}} memory used",
                ),
                (f"rigwatch_host_swap_total_bytes{{{HOST}}}", "{{rig}} swap total"),
                (f"rigwatch_host_swap_used_bytes{{{HOST}}}", "{{rig}} swap used"),
            ],
            minimum=0,
        )
    )
    lay.add(
        timeseries(
            "Swapping",
            "Bps",
            [
                (rate("rigwatch_host_swap_in_bytes_total"), "{{rig}} in"),
                (rate("rigwatch_host_swap_out_bytes_total"), "{{rig}} out"),
            ],
            minimum=0,
        )
    )
    lay.row("Disks")
    lay.add(
        table(
            "Filesystems",
            "bytes",
            [
                (f"rigwatch_host_filesystem_size_bytes{{{HOST}, {PSEUDO_FS}}}", ""),
                (f"rigwatch_host_filesystem_avail_bytes{{{HOST}, {PSEUDO_FS}}}", ""),
                (FILESYSTEM_USED, ""),
                (f"rigwatch_host_filesystem_readonly{{{HOST}, {PSEUDO_FS}}}", ""),
            ],
            columns={
                "Value #A": ("Size", "bytes"),
                "Value #B": ("Available", "bytes"),
                "Value #C": ("Used", "percentunit"),
                "Value #D": ("Read-only", "bool_yes_no"),
            },
        )
    )
    lay.add(percent_timeseries("Filesystem use", [(FILESYSTEM_USED, "{{rig}} {{mountpoint}}")]))
    lay.add(
        timeseries(
            "Disk throughput",
            "Bps",
            [
                (rate("rigwatch_host_disk_read_bytes_total"), "{{rig}} {{device}} read"),
                (rate("rigwatch_host_disk_written_bytes_total"), "{{rig}} {{device}} written"),
            ],
            minimum=0,
        )
    )
    lay.add(
        percent_timeseries(
            "Disk busy", [(rate("rigwatch_host_disk_io_time_seconds_total"), "{{rig}} {{device}}")]
        )
    )
    lay.row("Network")
    network_rates = [
        ("Network traffic", "Bps", [("receive_bytes", "in"), ("transmit_bytes", "out")]),
        (
            "Network packets and errors",
            "pps",
            [
                ("receive_packets", "packets in"),
                ("transmit_packets", "packets out"),
                ("receive_errors", "errors in"),
                ("transmit_errors", "errors out"),
            ],
        ),
    ]
    for title, unit, counters in network_rates:
        queries = [
            (rate(f"rigwatch_host_network_{counter}_total"), f"{{{{rig}}}} {{{{device}}}} {legend}")
            for counter, legend in counters
        ]
        lay.add(timeseries(title, unit, queries, minimum=0))
    lay.row("Sensors")
    lay.add(
        timeseries(
            "Temperatures and their thresholds",
            "celsius",
            [
                (f"rigwatch_host_temperature_celsius{{{HOST}}}", "{{rig}} {{chip}} {{sensor}}"),
                (
                    f"rigwatch_host_temperature_high_celsius{{{HOST}}} > 0",
                    "{{rig}} {{chip}} {{sensor}} high",
                ),
                (
                    f"rigwatch_host_temperature_critical_celsius{{{HOST}}} > 0",
                    "{{rig}} {{chip}} {{sensor}} critical",
                ),
            ],
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* (high|critical)$"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
                    ],
                }
            ],
        ),
        16,
        9,
    )
    lay.add(
        timeseries(
            "Fans",
            "rotrpm",
            [(f"rigwatch_host_fan_speed_rpm{{{HOST}}}", "{{rig}} {{chip}} {{sensor}}")],
            minimum=0,
        ),
        8,
        9,
    )
    return dashboard(
        "rigwatch-host",
        "rigwatch / Host detail",
        "The rig's host: CPU by mode and core, load, memory and swap, filesystems, disk and "
        "network IO, temperatures with their thresholds.",
        lay.panels,
        with_gpu=False,
    )


DASHBOARDS = {
    "rig-overview.json": rig_overview,
    "gpu-detail.json": gpu_detail,
    "host-detail.json": host_detail,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard, exactly as committed."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the committed files with the generated ones; exit 1 if they differ",
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = DASHBOARD_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python grafana/build_dashboards.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
