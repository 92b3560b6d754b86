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


def per_card(expr: str, by: str = "rig, instance, gpu") -> str:
    """Per-card value, NaN for a card that exists but cannot report it (see module doc)."""
    return f"max by ({by}) (\n  {expr}\n  or on ({CARD_KEY})\n  rigwatch_gpu_info{{{GPU}}} * NaN\n)"


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
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, panel: dict, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        return panel

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> dict:
        self.newline()
        panel = {
            "type": "row",
            "title": title,
            "collapsed": False,
            "panels": [],
            "id": self.next_id,
            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
        }
        self.next_id += 1
        self.y += 1
        return panel


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


def timeseries(title: str, unit: str, queries: list[tuple[str, str]], **kw) -> dict:
    description = kw.pop("description", "")
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(*queries),
        "fieldConfig": field_config(unit, **kw),
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, unit: str, queries: list[tuple[str, str]], **kw) -> dict:
    description = kw.pop("description", "")
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(*queries, instant=True),
        "fieldConfig": field_config(unit, **kw),
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def table(
    title: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    columns: dict[str, tuple[str, str]],
    hide: tuple[str, ...] = (),
    links: list | None = None,
    **kw,
) -> dict:
    """An instant table, one row per label set; columns maps 'Value #X' to (title, unit)."""
    description = kw.pop("description", "")
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
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(*queries, instant=True),
        "fieldConfig": config,
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {"excludeByName": excluded, "renameByName": renames},
            },
        ],
    }


def state_timeline(title: str, queries: list[tuple[str, str]], **kw) -> dict:
    description = kw.pop("description", "")
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(*queries),
        "fieldConfig": field_config("bool_on_off", **kw),
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        },
    }


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


def rig_overview() -> dict:
    lay = Layout()
    panels = [lay.row("GPUs")]
    panels.append(
        lay.place(
            table(
                "Every card now",
                "short",
                [
                    (f"max by (rig, instance, gpu, name) (rigwatch_gpu_info{{{GPU}}})", ""),
                    (per_card(f"rigwatch_gpu_temperature_celsius{{{GPU}}}"), ""),
                    (
                        per_card(
                            f"rigwatch_gpu_temperature_slowdown_threshold_celsius{{{GPU}}}"
                            f" - on ({CARD_KEY}) group_left () "
                            f"rigwatch_gpu_temperature_celsius{{{GPU}}}"
                        ),
                        "",
                    ),
                    (per_card(f"rigwatch_gpu_utilization_ratio{{{GPU}}}"), ""),
                    (
                        per_card(
                            f"rigwatch_gpu_memory_used_bytes{{{GPU}}} / on ({CARD_KEY}) "
                            f"group_left () rigwatch_gpu_memory_total_bytes{{{GPU}}}"
                        ),
                        "",
                    ),
                    (
                        per_card(
                            f"rigwatch_gpu_power_watts{{{GPU}}} / on ({CARD_KEY}) "
                            f"group_left () rigwatch_gpu_power_limit_watts{{{GPU}}}"
                        ),
                        "",
                    ),
                    (per_card(f"rigwatch_gpu_fan_speed_ratio{{{GPU}}}"), ""),
                    (
                        per_card(
                            f"sum by ({CARD_BY}) (rigwatch_gpu_throttle_reason_active{{{GPU}, "
                            'reason=~"sw_thermal|hw_thermal|hw_slowdown|hw_power_brake"})'
                        ),
                        "",
                    ),
                    (
                        f"sum by (rig, instance, gpu) (rigwatch_gpu_xid_errors_total"
                        f'{{{GPU}, critical="true"}})\nor\nmax by (rig, instance, gpu) '
                        f"(rigwatch_gpu_info{{{GPU}}}) * 0",
                        "",
                    ),
                    (
                        per_card(
                            "rigwatch_gpu_ecc_errors_total"
                            f'{{{GPU}, type="uncorrected", scope="volatile"}}'
                        ),
                        "",
                    ),
                    (
                        per_card(
                            f"rigwatch_gpu_pcie_link_width{{{GPU}}} / on ({CARD_KEY}) "
                            f"group_left () rigwatch_gpu_pcie_link_max_width{{{GPU}}}"
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
    )
    panels.append(
        lay.place(
            timeseries(
                "Headroom to each card's slowdown temperature",
                "celsius",
                [
                    (
                        f"rigwatch_gpu_temperature_slowdown_threshold_celsius{{{GPU}}}"
                        f" - on ({CARD_KEY}) group_left () "
                        f"rigwatch_gpu_temperature_celsius{{{GPU}}}",
                        "{{rig}} GPU {{gpu}}",
                    )
                ],
                thresholds=TEMPERATURE_STEPS,
                custom={"thresholdsStyle": {"mode": "line+area"}},
                description="Degrees left before the card slows itself down; under 5 is a warning.",
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Temperature",
                "celsius",
                [(f"rigwatch_gpu_temperature_celsius{{{GPU}}}", "{{rig}} GPU {{gpu}}")],
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Utilisation",
                "percentunit",
                [(f"rigwatch_gpu_utilization_ratio{{{GPU}}}", "{{rig}} GPU {{gpu}}")],
                minimum=0,
                maximum=1,
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Power of limit",
                "percentunit",
                [
                    (
                        f"rigwatch_gpu_power_watts{{{GPU}}} / on ({CARD_KEY}) group_left () "
                        f"rigwatch_gpu_power_limit_watts{{{GPU}}}",
                        "{{rig}} GPU {{gpu}}",
                    )
                ],
                minimum=0,
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Memory used",
                "percentunit",
                [
                    (
                        f"rigwatch_gpu_memory_used_bytes{{{GPU}}} / on ({CARD_KEY}) "
                        f"group_left () rigwatch_gpu_memory_total_bytes{{{GPU}}}",
                        "{{rig}} GPU {{gpu}}",
                    )
                ],
                minimum=0,
                maximum=1,
            ),
            8,
            8,
        )
    )
    panels.append(lay.row("Hosts"))
    panels.append(
        lay.place(
            table(
                "Every host now",
                "short",
                [
                    (
                        "1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total"
                        f'{{{HOST}, mode="idle"}}[$__rate_interval]))',
                        "",
                    ),
                    (f"max by (rig, instance) (rigwatch_host_load1{{{HOST}}})", ""),
                    (
                        "max by (rig, instance) (1 - rigwatch_host_memory_available_bytes"
                        f"{{{HOST}}} / rigwatch_host_memory_total_bytes{{{HOST}}})",
                        "",
                    ),
                    (
                        "max by (rig, instance) (1 - rigwatch_host_filesystem_avail_bytes"
                        f"{{{HOST}, {PSEUDO_FS}}} / rigwatch_host_filesystem_size_bytes"
                        f"{{{HOST}}})",
                        "",
                    ),
                    (f"max by (rig, instance) (rigwatch_host_temperature_celsius{{{HOST}}})", ""),
                    (
                        f"max by (rig, instance) (time() - rigwatch_host_boot_time_seconds"
                        f"{{{HOST}}})",
                        "",
                    ),
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
    )
    panels.append(
        lay.place(
            timeseries(
                "CPU busy",
                "percentunit",
                [
                    (
                        "1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total"
                        f'{{{HOST}, mode="idle"}}[$__rate_interval]))',
                        "{{rig}}",
                    )
                ],
                minimum=0,
                maximum=1,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Hottest host sensor",
                "celsius",
                [
                    (
                        f"max by (rig, instance) (rigwatch_host_temperature_celsius{{{HOST}}})",
                        "{{rig}}",
                    )
                ],
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Alerts"))
    panels.append(
        lay.place(
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
    )
    return dashboard(
        "rigwatch-overview",
        "rigwatch / Rig overview",
        "Every rig and card at a glance: temperatures against each card's own threshold, load, "
        "health, the hosts, and the firing alerts.",
        panels,
        with_gpu=True,
    )


def gpu_detail() -> dict:
    lay = Layout()
    panels = [lay.row("Now")]
    panels.append(
        lay.place(
            stat(
                "Card",
                "none",
                [(f"rigwatch_gpu_info{{{GPU}}}", "{{rig}} GPU {{gpu}}: {{name}} ({{pci_bus_id}})")],
                description="The card's name and PCI address.",
            )
            | {
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "textMode": "name",
                    "colorMode": "none",
                    "graphMode": "none",
                    "justifyMode": "auto",
                    "orientation": "auto",
                }
            },
            8,
            4,
        )
    )
    now_stats = [
        ("Temperature", "celsius", f"rigwatch_gpu_temperature_celsius{{{GPU}}}"),
        ("Memory temperature", "celsius", f"rigwatch_gpu_memory_temperature_celsius{{{GPU}}}"),
        ("Power", "watt", f"rigwatch_gpu_power_watts{{{GPU}}}"),
        ("Fan", "percentunit", f"rigwatch_gpu_fan_speed_ratio{{{GPU}}}"),
    ]
    for title, unit, expr in now_stats:
        panels.append(lay.place(stat(title, unit, [(per_card(expr), "{{rig}} GPU {{gpu}}")]), 4, 4))
    health_stats = [
        (
            "Uncorrectable ECC errors (since driver load)",
            f'rigwatch_gpu_ecc_errors_total{{{GPU}, type="uncorrected", scope="volatile"}}',
        ),
        (
            "Corrected ECC errors (since driver load)",
            f'rigwatch_gpu_ecc_errors_total{{{GPU}, type="corrected", scope="volatile"}}',
        ),
        ("Remapped rows", f"sum by ({CARD_BY}) (rigwatch_gpu_remapped_rows{{{GPU}}})"),
        ("Remap pending", f"rigwatch_gpu_remapped_rows_pending{{{GPU}}}"),
    ]
    for title, expr in health_stats:
        panels.append(
            lay.place(
                stat(
                    title,
                    "short",
                    [(per_card(expr), "{{rig}} GPU {{gpu}}")],
                    thresholds=COUNT_STEPS,
                ),
                6,
                4,
            )
        )
    panels.append(
        lay.place(
            stat(
                "Energy used in the shown period",
                "kwatth",
                [
                    (
                        f"increase(rigwatch_gpu_energy_joules_total{{{GPU}}}[$__range]) / 3600000",
                        "{{rig}} GPU {{gpu}}",
                    )
                ],
            ),
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Critical Xids (since exporter start)",
                "short",
                [
                    (
                        "sum by (rig, gpu) (rigwatch_gpu_xid_errors_total"
                        f'{{{GPU}, critical="true"}})\nor\n'
                        f"max by (rig, gpu) (rigwatch_gpu_info{{{GPU}}}) * 0",
                        "{{rig}} GPU {{gpu}}",
                    )
                ],
                thresholds=COUNT_STEPS,
            ),
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Driver",
                "none",
                [(f"rigwatch_driver_info{{{HOST}}}", "{{rig}}: {{driver_version}}")],
            )
            | {
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "textMode": "name",
                    "colorMode": "none",
                    "graphMode": "none",
                    "justifyMode": "auto",
                    "orientation": "auto",
                }
            },
            6,
            4,
        )
    )
    panels.append(
        lay.place(
            stat(
                "P-state",
                "none",
                [(per_card(f"rigwatch_gpu_pstate{{{GPU}}}"), "{{rig}} GPU {{gpu}}")],
                mappings=[PSTATE_MAPPING],
            ),
            6,
            4,
        )
    )
    panels.append(lay.row("Over time"))
    panels.append(
        lay.place(
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
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Utilisation",
                "percentunit",
                [
                    (f"rigwatch_gpu_utilization_ratio{{{GPU}}}", "GPU {{gpu}} compute"),
                    (f"rigwatch_gpu_memory_utilization_ratio{{{GPU}}}", "GPU {{gpu}} memory bus"),
                    (f"rigwatch_gpu_encoder_utilization_ratio{{{GPU}}}", "GPU {{gpu}} encoder"),
                    (f"rigwatch_gpu_decoder_utilization_ratio{{{GPU}}}", "GPU {{gpu}} decoder"),
                ],
                minimum=0,
                maximum=1,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Memory",
                "bytes",
                [
                    (f"rigwatch_gpu_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} used"),
                    (f"rigwatch_gpu_memory_total_bytes{{{GPU}}}", "GPU {{gpu}} total"),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Power and its limit",
                "watt",
                [
                    (f"rigwatch_gpu_power_watts{{{GPU}}}", "GPU {{gpu}} draw"),
                    (f"rigwatch_gpu_power_limit_watts{{{GPU}}}", "GPU {{gpu}} limit"),
                    (
                        f"rate(rigwatch_gpu_energy_joules_total{{{GPU}}}[$__rate_interval])",
                        "GPU {{gpu}} average from energy",
                    ),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Clocks",
                "hertz",
                [
                    (f"rigwatch_gpu_clock_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}}"),
                    (f"rigwatch_gpu_clock_max_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}} max"),
                ],
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
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
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
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
    )
    panels.append(lay.row("PCIe and errors"))
    panels.append(
        lay.place(
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
            8,
        )
    )
    panels.append(
        lay.place(
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
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "PCIe replays and Xid events",
                "cps",
                [
                    (
                        f"rate(rigwatch_gpu_pcie_replay_errors_total{{{GPU}}}[$__rate_interval])",
                        "GPU {{gpu}} PCIe replays",
                    ),
                    (
                        f"rate(rigwatch_gpu_xid_errors_total{{{GPU}}}[$__rate_interval])",
                        "GPU {{gpu}} Xid {{xid}}",
                    ),
                ],
                minimum=0,
            ),
            8,
            8,
        )
    )
    panels.append(lay.row("Processes"))
    panels.append(
        lay.place(
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
    )
    return dashboard(
        "rigwatch-gpu",
        "rigwatch / GPU detail",
        "One card over time: temperatures against its thresholds, clocks, P-state, throttle "
        "reasons, power and energy, PCIe, errors and the processes on it.",
        panels,
        with_gpu=True,
    )


def host_detail() -> dict:
    lay = Layout()
    cpu_count = (
        f"count by (rig, instance) (count by (rig, instance, cpu) "
        f"(rigwatch_host_cpu_seconds_total{{{HOST}}}))"
    )
    panels = [lay.row("CPU")]
    panels.append(
        lay.place(
            timeseries(
                "CPU by mode",
                "percentunit",
                [
                    (
                        "sum by (rig, instance, mode) (rate(rigwatch_host_cpu_seconds_total"
                        f'{{{HOST}, mode!="idle"}}[$__rate_interval]))\n'
                        f"/ on (rig, instance) group_left ()\n{cpu_count}",
                        "{{rig}} {{mode}}",
                    )
                ],
                minimum=0,
                custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30},
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "CPU by core",
                "percentunit",
                [
                    (
                        "1 - rate(rigwatch_host_cpu_seconds_total"
                        f'{{{HOST}, mode="idle"}}[$__rate_interval])',
                        "{{rig}} cpu {{cpu}}",
                    )
                ],
                minimum=0,
                maximum=1,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
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
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Up for",
                "s",
                [(f"time() - rigwatch_host_boot_time_seconds{{{HOST}}}", "{{rig}}")],
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Memory"))
    panels.append(
        lay.place(
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
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Swapping",
                "Bps",
                [
                    (
                        f"rate(rigwatch_host_swap_in_bytes_total{{{HOST}}}[$__rate_interval])",
                        "{{rig}} in",
                    ),
                    (
                        f"rate(rigwatch_host_swap_out_bytes_total{{{HOST}}}[$__rate_interval])",
                        "{{rig}} out",
                    ),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Disks"))
    panels.append(
        lay.place(
            table(
                "Filesystems",
                "bytes",
                [
                    (f"rigwatch_host_filesystem_size_bytes{{{HOST}, {PSEUDO_FS}}}", ""),
                    (f"rigwatch_host_filesystem_avail_bytes{{{HOST}, {PSEUDO_FS}}}", ""),
                    (
                        f"1 - rigwatch_host_filesystem_avail_bytes{{{HOST}, {PSEUDO_FS}}}"
                        f" / rigwatch_host_filesystem_size_bytes{{{HOST}, {PSEUDO_FS}}}",
                        "",
                    ),
                    (f"rigwatch_host_filesystem_readonly{{{HOST}, {PSEUDO_FS}}}", ""),
                ],
                columns={
                    "Value #A": ("Size", "bytes"),
                    "Value #B": ("Available", "bytes"),
                    "Value #C": ("Used", "percentunit"),
                    "Value #D": ("Read-only", "bool_yes_no"),
                },
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Filesystem use",
                "percentunit",
                [
                    (
                        f"1 - rigwatch_host_filesystem_avail_bytes{{{HOST}, {PSEUDO_FS}}}"
                        f" / rigwatch_host_filesystem_size_bytes{{{HOST}, {PSEUDO_FS}}}",
                        "{{rig}} {{mountpoint}}",
                    )
                ],
                minimum=0,
                maximum=1,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Disk throughput",
                "Bps",
                [
                    (
                        f"rate(rigwatch_host_disk_read_bytes_total{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} read",
                    ),
                    (
                        f"rate(rigwatch_host_disk_written_bytes_total{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} written",
                    ),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Disk busy",
                "percentunit",
                [
                    (
                        "rate(rigwatch_host_disk_io_time_seconds_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}}",
                    )
                ],
                minimum=0,
                maximum=1,
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Network"))
    panels.append(
        lay.place(
            timeseries(
                "Network traffic",
                "Bps",
                [
                    (
                        "rate(rigwatch_host_network_receive_bytes_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} in",
                    ),
                    (
                        "rate(rigwatch_host_network_transmit_bytes_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} out",
                    ),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Network packets and errors",
                "pps",
                [
                    (
                        "rate(rigwatch_host_network_receive_packets_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} packets in",
                    ),
                    (
                        "rate(rigwatch_host_network_transmit_packets_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} packets out",
                    ),
                    (
                        "rate(rigwatch_host_network_receive_errors_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} errors in",
                    ),
                    (
                        "rate(rigwatch_host_network_transmit_errors_total"
                        f"{{{HOST}}}[$__rate_interval])",
                        "{{rig}} {{device}} errors out",
                    ),
                ],
                minimum=0,
            ),
            12,
            8,
        )
    )
    panels.append(lay.row("Sensors"))
    panels.append(
        lay.place(
            timeseries(
                "Temperatures and their thresholds",
                "celsius",
                [
                    (
                        f"rigwatch_host_temperature_celsius{{{HOST}}}",
                        "{{rig}} {{chip}} {{sensor}}",
                    ),
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
                            {
                                "id": "custom.lineStyle",
                                "value": {"fill": "dash", "dash": [10, 10]},
                            }
                        ],
                    }
                ],
            ),
            16,
            9,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Fans",
                "rotrpm",
                [(f"rigwatch_host_fan_speed_rpm{{{HOST}}}", "{{rig}} {{chip}} {{sensor}}")],
                minimum=0,
            ),
            8,
            9,
        )
    )
    return dashboard(
        "rigwatch-host",
        "rigwatch / Host detail",
        "The rig's host: CPU by mode and core, load, memory and swap, filesystems, disk and "
        "network IO, temperatures with their thresholds.",
        panels,
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
