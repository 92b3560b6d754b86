"""Static checks of the shipped Prometheus files: promtool's own checks, every alert's unit
tests, and the conventions every alert follows (severity, annotations, dashboard links,
metric names from the exporter's contract)."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
import yaml

from tests.stack.stack_support import (
    DASHBOARD_FILES,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    SERVER_OWN_METRICS,
    alerting_rules,
    documented_metrics,
    metric_names_in,
    recorded_names,
    run_tool,
)

SEVERITIES = {"critical", "warning", "info"}


def test_promtool_accepts_the_config():
    result = run_tool("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob must find every shipped rule file.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_promtool_lint_is_clean():
    result = run_tool("promtool", "check", "rules", "--lint=all", *map(str, RULE_FILES))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_FILES), output
    assert "lint" not in output.lower(), output


@pytest.mark.parametrize("test_file", RULE_TEST_FILES, ids=lambda p: p.name)
def test_rule_unit_tests_pass(test_file):
    result = run_tool("promtool", "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_expectation_fails():
    """The unit tests can fail: the same tests with one summary changed are rejected."""
    source = PROMETHEUS_DIR / "tests" / "gpu_test.yml"
    text = source.read_text().replace("is at 86 °C, slowdown at 90 °C", "is at 87 °C", 1)
    broken = PROMETHEUS_DIR / "tests" / ".broken_test.yml.tmp"
    try:
        broken.write_text(text)
        result = run_tool("promtool", "test", "rules", str(broken))
    finally:
        broken.unlink(missing_ok=True)
    assert result.returncode != 0
    assert "GpuTemperatureNearSlowdown" in result.stdout + result.stderr


def _rule_tests() -> list[dict]:
    checks = []
    for path in RULE_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            checks.extend(test.get("alert_rule_test", []))
    return checks


def test_every_alert_has_firing_and_quiet_cases():
    checks = _rule_tests()
    fired = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - fired == set(), "alerts never shown firing in prometheus/tests"
    # The Watchdog is the one alert that is never quiet.
    assert names - quiet == {"Watchdog"}, "alerts never shown quiet in prometheus/tests"


def test_every_firing_case_checks_annotations_exactly():
    for check in _rule_tests():
        for expected in check.get("exp_alerts") or []:
            annotations = expected.get("exp_annotations", {})
            assert {"summary", "description"} <= set(annotations), check["alertname"]


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_conventions(rule):
    labels = rule.get("labels", {})
    annotations = rule.get("annotations", {})
    if rule["alert"] == "Watchdog":
        assert labels == {"severity": "none"}
        assert rule["expr"].strip() == "vector(1)"
    else:
        assert labels.get("severity") in SEVERITIES
        assert "{{" in annotations["summary"], "summary should carry values, not only prose"
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert len(annotations["description"]) > 60, "description should say what to check"


def _dashboards() -> dict[str, dict]:
    return {data["uid"]: data for data in (json.loads(p.read_text()) for p in DASHBOARD_FILES)}


@pytest.mark.parametrize(
    "rule", [r for r in alerting_rules() if r["alert"] != "Watchdog"], ids=lambda r: r["alert"]
)
def test_dashboard_link_points_at_a_real_dashboard_and_variables(rule):
    link = rule["annotations"]["dashboard"]
    match = re.fullmatch(r"/d/([\w-]+)(?:\?(.*))?", link)
    assert match, f"dashboard annotation must be a path /d/<uid>?var-...: {link}"
    dashboards = _dashboards()
    uid, query = match.groups()
    assert uid in dashboards
    variables = {v["name"] for v in dashboards[uid]["templating"]["list"]}
    for key, _ in urllib.parse.parse_qsl(query or ""):
        assert key.startswith("var-") and key[4:] in variables, (uid, key)


def test_every_metric_named_by_a_rule_is_exported():
    known = documented_metrics() | SERVER_OWN_METRICS | recorded_names()
    for path in RULE_FILES:
        unknown = metric_names_in(path.read_text()) - known
        assert not unknown, f"{path.name} names metrics nobody exports: {sorted(unknown)}"


def test_metric_name_extraction_sees_names():
    """The name check above is not vacuous: it finds the names in a typical rule."""
    names = metric_names_in(
        "rigwatch_gpu_up == 0 and up{job='x'} == 1 unless prometheus_tsdb_x_total > 0"
    )
    assert names == {"rigwatch_gpu_up", "up", "prometheus_tsdb_x_total"}
    assert "rigwatch_gpu_up" in documented_metrics()
    assert "rigwatch_bot_delivery_latency_seconds_bucket" in documented_metrics()


def test_targets_give_every_rig_a_name():
    for path in (PROMETHEUS_DIR / "targets").glob("*.yml"):
        for entry in yaml.safe_load(path.read_text()):
            assert entry["targets"]
            assert entry["labels"]["rig"]
