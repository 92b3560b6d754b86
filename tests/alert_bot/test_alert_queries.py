"""What an alert's chart and "Now:" line show (alert_bot/alerts/alert_queries.py): every
shipped alert rule says it in its annotations, the queries there are PromQL that Prometheus's own
promtool evaluates, and a rule of the user's own without them still charts from its expression."""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from alert_bot.alerts.alert_queries import CHART_ANNOTATIONS, alert_queries, comparison_sides
from alert_bot.alerts.current import measured_expression
from alert_bot.alerts.model import Alert
from alert_bot.upstream.units import metric_names, unit_named, unit_of
from tests.servers import have_binary
from tests.support import REPO

RULES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
# Alerts whose expression compares nothing (absent(), a heartbeat, "seen before unless seen
# now"): there is no measured value, so no value_query and no threshold line; unit only.
NOTHING_COMPARED = {"GpuGoneFromBus", "RigSilent", "Watchdog"}
# Where the annotations say better than a scan of the expression could (the scan's reading was
# a bug): GpuRunStalled's value is a utilisation share, not bytes; GpuCoolingDegrading's is the
# rise in loaded temperature, not the count of hours its "enough data" filter counts; the
# push door's two alerts count refusals, which the scan reads from `_refused_total` as "refused".
BETTER_THAN_THE_SCAN = {
    "GpuRunStalled",
    "GpuCoolingDegrading",
    "PushRigLoginRefused",
    "PushRigOverLimit",
}


def _alert_rules() -> list[dict]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _with_url(expr: str, annotations: dict[str, str]) -> Alert:
    url = "http://prom:9090/graph?g0.expr=" + urllib.parse.quote(expr)
    return Alert("firing", {"alertname": "X"}, annotations, "", generator_url=url)


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_every_shipped_alert_names_what_to_chart(rule):
    annotations = rule["annotations"]
    unit = unit_named(annotations["unit"])  # raises on a missing or empty one
    assert unit.symbol, rule["alert"]
    if rule["alert"] in NOTHING_COMPARED:
        assert "value_query" not in annotations and "threshold_query" not in annotations
        assert comparison_sides(rule["expr"]) is None
        return
    value, threshold = annotations["value_query"], annotations["threshold_query"]
    assert value.strip() and threshold.strip()
    if rule["alert"] not in BETTER_THAN_THE_SCAN:
        # The annotations hold what the bot used to work out from the expression: the
        # charts and "Now:" lines of shipped alerts are what they were.
        assert comparison_sides(rule["expr"]) == (value, threshold)
        assert unit == unit_of(value)
    queries = alert_queries(_with_url(rule["expr"], annotations))
    assert (queries.value, queries.threshold, queries.unit) == (value, threshold, unit)


def test_the_shipped_queries_are_promql_that_promtool_evaluates(tmp_path: Path):
    """Each value_query and threshold_query, evaluated by promtool against the shipped rules
    (a query that does not parse, or names a function Prometheus lacks, fails here)."""
    if not have_binary("promtool"):
        pytest.fail("promtool is missing: tests/run.sh installs Debian's prometheus package")
    tests = []
    for rule in _alert_rules():
        for key in ("value_query", "threshold_query"):
            query = rule["annotations"].get(key)
            if query is None:
                continue
            if not metric_names(query):  # a number ("0.95", "10 * 1024 * 1024"): no series
                continue
            tests.append({"expr": query, "eval_time": "1m", "exp_samples": []})
    assert len(tests) > 40
    spec = {
        "rule_files": [str(path) for path in RULES],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [], "promql_expr_test": tests}],
    }
    (tmp_path / "queries_test.yml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "queries_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_annotations_win_over_the_expression_and_a_number_is_a_line():
    annotations = {"value_query": "a_celsius", "threshold_query": "80", "unit": "celsius"}
    queries = alert_queries(_with_url("b_bytes > 3", annotations))
    assert (queries.value, queries.threshold_number, queries.unit.symbol) == ("a_celsius", 80, "°C")
    by_query = alert_queries(_with_url("x", {**annotations, "threshold_query": "limit_celsius"}))
    assert (by_query.threshold, by_query.threshold_number) == ("limit_celsius", None)
    assert measured_expression(_with_url("x", annotations)).value == "a_celsius"


def test_a_custom_rule_without_annotations_charts_from_its_expression():
    queries = alert_queries(_with_url("my_temperature_celsius > 70", {}))
    assert (queries.value, queries.threshold, queries.compares) == (
        "my_temperature_celsius",
        "70",
        True,
    )
    assert queries.unit.symbol == "°C"
    # Nothing compared: the whole expression is charted, with no threshold line and no "Now:".
    plain = alert_queries(_with_url("absent(up)", {}))
    assert (plain.value, plain.threshold, plain.compares) == ("absent(up)", None, False)
    assert measured_expression(_with_url("absent(up)", {})) is None
    assert alert_queries(Alert("firing", {}, {}, "")) is None


def test_chart_annotations_are_the_ones_the_rules_use():
    used = {k for rule in _alert_rules() for k in rule["annotations"] if k in CHART_ANNOTATIONS}
    assert used == set(CHART_ANNOTATIONS)
