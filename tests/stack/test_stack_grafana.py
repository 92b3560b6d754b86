"""Checks of the Grafana files that need no Grafana: the dashboards match their generator,
parse, keep stable uids, and every panel has a datasource, a unit, the "not supported" mapping
and queries that use the variables and $__rate_interval; the provisioning agrees with
Prometheus's scrape interval and the compose mounts."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from tests.stack.stack_support import (
    DASHBOARD_FILES,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    SERVER_OWN_METRICS,
    dashboard_queries,
    documented_metrics,
    metric_names_in,
    run_tool,
)
from tests.support import REPO

# Stable: rule annotations and the alert bot link to these.
EXPECTED_UIDS = {
    "rig-overview.json": "rigwatch-overview",
    "gpu-detail.json": "rigwatch-gpu",
    "host-detail.json": "rigwatch-host",
    "energy.json": "rigwatch-energy",
    "card-health.json": "rigwatch-health",
}
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|delta|deriv|\w+_over_time)\s*\(")


def _load(path):
    return json.loads(path.read_text())


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p["type"] != "row"]


def test_committed_dashboards_match_the_generator():
    result = run_tool(sys.executable, str(GRAFANA_DIR / "build_dashboards.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_uids_are_stable_and_unique():
    assert {p.name for p in DASHBOARD_FILES} == set(EXPECTED_UIDS)
    uids = [_load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARD_FILES:
        assert _load(path)["uid"] == EXPECTED_UIDS[path.name]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_variables(path):
    dashboard = _load(path)
    names = [v["name"] for v in dashboard["templating"]["list"]]
    expected = ["datasource", "job", "rig", "instance"]
    if path.name != "host-detail.json":
        expected.append("gpu")
    assert names == expected
    datasource = dashboard["templating"]["list"][0]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_has_datasource_unit_and_no_data_text(path):
    panels = _panels(_load(path))
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"panel {title!r} has no unit"
        assert defaults["noValue"] == "no data", title
        nan_text = [
            m["options"]["result"]["text"]
            for m in defaults["mappings"]
            if m["type"] == "special" and m["options"]["match"] == "nan"
        ]
        assert nan_text == ["not supported on this card"], title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_query_uses_the_variables_and_rate_interval(path):
    for title, expr, instant in dashboard_queries(_load(path)):
        windows = re.findall(r"\[([^\]]+)\]", expr)
        assert len(windows) == len(RANGE_FUNCTIONS.findall(expr)), (title, expr)
        for window in windows:
            allowed = {"$__rate_interval", "$__range"} if instant else {"$__rate_interval"}
            # A subquery's range is the variable too; its step is the resolution the query
            # integrates at (the Energy dashboard's power without a counter).
            span, _, step = window.partition(":")
            assert span in allowed, f"{title}: window [{window}] in {expr}"
            assert not step or re.fullmatch(r"\d+s", step), f"{title}: step in [{window}]"
        if "ALERTS" in expr:
            assert 'rig=~"$rig"' in expr
            continue
        for variable in ('job=~"$job"', 'rig=~"$rig"', 'instance=~"$instance"'):
            assert variable in expr, f"{title}: {expr} is not filtered by {variable}"
        if "rigwatch_gpu_" in expr:
            assert 'gpu=~"$gpu"' in expr, f"{title}: {expr} is not filtered by gpu"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_table_columns_are_keyed_by_named_query_ids(path):
    """Every query has a refId that names it, and each table renames exactly its own queries'
    value columns, so inserting a query cannot shift another column's title or unit. Grafana's
    Prometheus data source names a lone query's column plain "Value", "Value #<refId>" otherwise."""
    for panel in _panels(_load(path)):
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for ref in refs:
            assert re.fullmatch(r"[a-z][a-z0-9_]+", ref), f"{panel['title']}: refId {ref!r}"
        if panel["type"] != "table":
            continue
        (organize,) = [t for t in panel["transformations"] if t["id"] == "organize"]
        renames = organize["options"]["renameByName"]
        expected = {"Value"} if len(refs) == 1 else {f"Value #{ref}" for ref in refs}
        assert set(renames) == expected, panel["title"]
        overridden = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
        assert overridden == set(renames.values()), panel["title"]


def test_per_card_fields_distinguish_not_supported_from_no_data():
    """Fields a card may lack answer NaN for that card (shown as "not supported")."""
    gpu = _load(GRAFANA_DIR / "dashboards" / "gpu-detail.json")
    queries = {title: expr for title, expr, _ in dashboard_queries(gpu)}
    for title in ("Memory temperature", "Uncorrectable ECC errors (since driver load)"):
        assert "rigwatch_gpu_info" in queries[title] and "* NaN" in queries[title]


def test_every_metric_a_dashboard_names_is_exported():
    known = documented_metrics() | SERVER_OWN_METRICS
    for path in DASHBOARD_FILES:
        dashboard = _load(path)
        text = "\n".join(expr for _, expr, _ in dashboard_queries(dashboard))
        text += "\n".join(v.get("definition", "") for v in dashboard["templating"]["list"])
        names = metric_names_in(text)
        assert names, path.name
        unknown = names - known
        assert not unknown, f"{path.name} names metrics nobody exports: {sorted(unknown)}"


def test_datasource_provisioning_matches_prometheus_and_dashboards():
    provisioning = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = provisioning["datasources"]
    assert datasource["uid"] == "rigwatch-prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    scrape_interval = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["global"][
        "scrape_interval"
    ]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval
    for path in DASHBOARD_FILES:
        current = _load(path)["templating"]["list"][0]["current"]["value"]
        assert current == datasource["uid"]


def test_dashboard_provider_reads_where_compose_mounts_the_dashboards():
    provider = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "rigwatch.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert provider["type"] == "file"


def _exprs(panel: dict) -> str:
    return "\n".join(target["expr"] for target in panel["targets"])


def test_dashboards_show_what_the_stack_needs_on_each():
    """The panels a rig owner looks for, by what they query and how they draw it."""
    overview = _panels(_load(GRAFANA_DIR / "dashboards" / "rig-overview.json"))
    gpu = _panels(_load(GRAFANA_DIR / "dashboards" / "gpu-detail.json"))
    host = _panels(_load(GRAFANA_DIR / "dashboards" / "host-detail.json"))

    def queried(panels: list[dict], metric: str, kind: str | None = None) -> list[dict]:
        return [p for p in panels if metric in _exprs(p) and (kind is None or p["type"] == kind)]

    # Rig overview: each card against its own threshold and limits, health, hosts, alerts.
    for metric in (
        "rigwatch_gpu_temperature_slowdown_threshold_celsius",
        "rigwatch_gpu_utilization_ratio",
        "rigwatch_gpu_memory_used_bytes",
        "rigwatch_gpu_power_limit_watts",
        "rigwatch_gpu_fan_speed_ratio",
        "rigwatch_gpu_throttle_reason_active",
        "rigwatch_gpu_xid_errors_total",
        "rigwatch_gpu_ecc_errors_total",
        "rigwatch_gpu_pcie_link_max_width",  # the link against what the card supports
        "rigwatch_host_cpu_seconds_total",
        "rigwatch_host_memory_available_bytes",
        "rigwatch_host_filesystem_avail_bytes",
        "rigwatch_host_temperature_celsius",
        "ALERTS",
    ):
        assert queried(overview, metric), f"rig overview lacks {metric}"
    # GPU detail: clocks, P-state, throttle reasons as a state timeline, energy, PCIe, processes.
    for metric in (
        "rigwatch_gpu_clock_hertz",
        "rigwatch_gpu_pstate",
        "rigwatch_gpu_energy_joules_total",
        "rigwatch_gpu_pcie_link_generation",
        "rigwatch_gpu_pcie_link_max_width",
        "rigwatch_gpu_pcie_replay_errors_total",
        "rigwatch_gpu_memory_temperature_threshold_celsius",
    ):
        assert queried(gpu, metric), f"GPU detail lacks {metric}"
    assert queried(gpu, "rigwatch_gpu_throttle_reason_active", "state-timeline")
    (processes,) = queried(gpu, "rigwatch_gpu_process_memory_bytes", "table")
    (organize,) = [t for t in processes["transformations"] if t["id"] == "organize"]
    hidden = organize["options"]["excludeByName"]
    for column in ("pid", "process", "user"):
        assert not hidden.get(column), f"process table hides {column}"
    # Host detail: CPU by mode and core, load, memory and swap, disks, network, sensors.
    for metric in (
        'mode!="idle"',
        "rigwatch_host_load1",
        "rigwatch_host_swap_used_bytes",
        "rigwatch_host_filesystem_size_bytes",
        "rigwatch_host_disk_read_bytes_total",
        "rigwatch_host_network_receive_bytes_total",
        "rigwatch_host_temperature_high_celsius",
        "rigwatch_host_temperature_critical_celsius",
    ):
        assert queried(host, metric), f"host detail lacks {metric}"
    assert any("by (rig, instance, mode)" in _exprs(p) for p in host)
    assert any("cpu {{cpu}}" in t.get("legendFormat", "") for p in host for t in p["targets"])
