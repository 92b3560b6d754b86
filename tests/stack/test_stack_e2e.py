"""End to end with the real servers: the exporter on the simulated NVML → Debian's Prometheus
with the shipped rules (1 s intervals, `for:` shortened by an overlay) → Debian's Alertmanager
with the shipped routing → a webhook receiver standing in for the alert bot. Also 20 simulated
rigs through file-based discovery, with every dashboard query run against them."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.stack.stack_support import (
    GROUP_INTERVAL_S,
    SERVER_OWN_METRICS,
    WebhookReceiver,
    assert_dashboard_answers,
    dashboard_queries,
    fake_sysfs,
    load_dashboard,
    post_alerts,
    query,
    remove_tree,
    rich_rigs_workdir,
    running_shipped_alertmanager,
    running_shipped_prometheus,
    substitute_variables,
    wait_rigs_scraped,
    write_alertmanager_overlay,
    write_targets,
)
from tests.support import (
    REPO,
    ManagedProcess,
    fake_nvml_env,
    free_port,
    http_get,
    make_scenario,
    running_exporter,
    wait_for_http,
    wait_until,
    write_scenario,
)

TOKEN = "e2e-webhook-token"
CARD_NAME = "NVIDIA GeForce RTX 4090"


class Pipeline:
    """The running pieces of one end-to-end setup."""

    def __init__(self, scenario_path: Path, scenario: dict, exporter: str, prometheus: str,
                 alertmanager: str, webhook: WebhookReceiver) -> None:  # fmt: skip
        self.scenario_path = scenario_path
        self.scenario = scenario
        self.exporter = exporter
        self.instance = exporter.removeprefix("http://")
        self.prometheus = prometheus
        self.alertmanager = alertmanager
        self.webhook = webhook

    def set_card(self, index: int, **fields) -> None:
        self.scenario["devices"][index].update(fields)
        write_scenario(self.scenario_path, self.scenario)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, fake_nvml_dir):
    workdir = tmp_path_factory.mktemp("stack-e2e")
    try:
        scenario = make_scenario(2)
        scenario_path = workdir / "scenario.json"
        write_scenario(scenario_path, scenario)
        sysfs = fake_sysfs(workdir / "sys")
        with contextlib.ExitStack() as stack:
            webhook = stack.enter_context(WebhookReceiver(TOKEN))
            _, exporter = stack.enter_context(
                running_exporter(scenario_path, f"--path.sysfs={sysfs}")
            )
            alertmanager = stack.enter_context(
                running_shipped_alertmanager(workdir, webhook.url, TOKEN)
            )
            am_port = int(alertmanager.rsplit(":", 1)[1])
            prometheus = stack.enter_context(running_shipped_prometheus(workdir, am_port))
            write_targets(workdir / "targets" / "rigs.yml", {"rig1": exporter[len("http://") :]})
            wait_until(
                lambda: query(prometheus, 'rigwatch_gpu_up{rig="rig1"}'),
                timeout=30,
                what="the exporter's first scrape",
            )
            yield Pipeline(scenario_path, scenario, exporter, prometheus, alertmanager, webhook)
    finally:
        remove_tree(workdir)


def test_watchdog_arrives_on_its_own_route(pipeline):
    (payload, alert), *_ = wait_until(
        lambda: pipeline.webhook.alerts("Watchdog", "firing"), timeout=30, what="Watchdog"
    )
    assert payload["version"] == "4"
    assert payload["receiver"] == "bot-watchdog"
    assert alert["labels"] == {"alertname": "Watchdog", "severity": "none"}
    assert alert["annotations"]["summary"] == "The alerting pipeline is working (heartbeat)"
    # It repeats, so the bot can tell a silent pipeline from a quiet one.
    wait_until(
        lambda: len(pipeline.webhook.alerts("Watchdog")) >= 2, timeout=30, what="a 2nd Watchdog"
    )
    assert pipeline.webhook.rejected == 0


def test_heated_card_pages_and_cooling_resolves(pipeline):
    try:
        pipeline.set_card(0, temperature_c=93)
        (payload, alert), *_ = wait_until(
            lambda: pipeline.webhook.alerts("GpuTemperatureCritical", "firing"),
            timeout=60,
            what="GpuTemperatureCritical at the webhook",
        )
        assert payload["receiver"] == "bot-critical"
        assert payload["groupLabels"] == {"alertname": "GpuTemperatureCritical", "rig": "rig1"}
        labels = alert["labels"]
        assert labels["severity"] == "critical"
        assert labels["rig"] == "rig1"
        assert labels["gpu"] == "0"
        assert labels["name"] == CARD_NAME
        assert labels["instance"] == pipeline.instance
        assert labels["job"] == "rigwatch"
        assert alert["annotations"]["summary"] == (
            f"GPU 0 ({CARD_NAME}) on rig1 is at 93 °C, past its slowdown at 90 °C "
            "(shutdown at 95 °C)"
        )
        assert "nvidia-smi -i 0 -pl WATTS" in alert["annotations"]["description"]
        assert alert["annotations"]["dashboard"] == "/d/rigwatch-gpu?var-rig=rig1&var-gpu=0"
        assert "g0.expr=" in alert["generatorURL"]

        pipeline.set_card(0, temperature_c=45)
        (_, resolved), *_ = wait_until(
            lambda: pipeline.webhook.alerts("GpuTemperatureCritical", "resolved"),
            timeout=60,
            what="the resolved notice",
        )
        assert resolved["labels"] == labels
        assert resolved["endsAt"] > resolved["startsAt"]
        # The warning for the same card fired alongside but was inhibited by the critical one.
        assert pipeline.webhook.alerts("GpuTemperatureNearSlowdown", "firing") == []
        # The cool card never paged.
        assert all(
            a["labels"]["gpu"] == "0" for _, a in pipeline.webhook.alerts("GpuTemperatureCritical")
        )
    finally:
        pipeline.set_card(0, temperature_c=45)


def test_lost_card_pages(pipeline):
    try:
        pipeline.set_card(1, lost=True)
        (payload, alert), *_ = wait_until(
            lambda: pipeline.webhook.alerts("GpuLost", "firing"), timeout=60, what="GpuLost"
        )
        assert payload["receiver"] == "bot-critical"
        assert alert["labels"]["gpu"] == "1"
        assert alert["labels"]["rig"] == "rig1"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == (
            f"GPU 1 ({CARD_NAME}) on rig1 is lost: the driver cannot reach it"
        )
    finally:
        pipeline.set_card(1, lost=False)


def _rule_groups(prometheus: str) -> list[dict]:
    status, body = http_get(prometheus + "/api/v1/rules")
    assert status == 200
    return json.loads(body)["data"]["groups"]


def test_every_rule_evaluates_cleanly_on_real_data(pipeline):
    # Every rule but the hourly groups' (rules/wear.yml) has run on the exporter's output.
    def evaluated() -> list[dict] | None:
        groups = _rule_groups(pipeline.prometheus)
        pending = [
            r
            for g in groups
            if g["interval"] < 3600
            for r in g["rules"]
            if r["health"] == "unknown"
        ]
        return None if pending else groups

    groups = wait_until(evaluated, timeout=60, what="every rule evaluated")
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 30
    # The hourly groups (rules/wear.yml) may not have run yet: not run is fine, failing is not.
    broken = {
        r["name"]: r.get("lastError")
        for group in groups
        for r in group["rules"]
        if r["health"] == "err" or (r["health"] != "ok" and group["interval"] < 3600)
    }
    assert broken == {}
    status, body = http_get(pipeline.prometheus + "/api/v1/alerts")
    alerts = json.loads(body)["data"]["alerts"]
    for alert in alerts:
        for text in alert["annotations"].values():
            assert "error expanding template" not in text, text
    # On the simulated cards nothing but what the tests caused may fire: no false alarms from
    # the exporter's real output (counters it creates at 0, labels it adds or leaves out).
    gpu_alerts = {
        a["labels"]["alertname"]
        for a in alerts
        if a["labels"]["alertname"].startswith(("Gpu", "Nvml"))
    }
    assert gpu_alerts <= {"GpuLost", "GpuTemperatureCritical", "GpuTemperatureNearSlowdown"}
    assert pipeline.webhook.alerts("GpuCriticalXid") == []


def test_server_metrics_named_by_rules_exist(pipeline):
    def names() -> set[str]:
        status, body = http_get(pipeline.prometheus + "/api/v1/label/__name__/values")
        return set(json.loads(body)["data"])

    found = wait_until(
        lambda: names() >= SERVER_OWN_METRICS and names(),
        timeout=30,
        what="Prometheus and Alertmanager's own metrics",
    )
    assert found >= SERVER_OWN_METRICS


def test_critical_inhibits_warning_for_the_same_card_only(pipeline):
    """Shipped inhibit rules, real Alertmanager: alerts pushed as Prometheus would."""
    base = {"rig": "inhibit-rig", "instance": "inhibit-rig:10735", "job": "rigwatch"}
    post_alerts(
        pipeline.alertmanager,
        [
            {"labels": {**base, "alertname": "InhibitProbeCritical", "severity": "critical",
                        "gpu": "0"}},
            {"labels": {**base, "alertname": "InhibitProbeWarning", "severity": "warning",
                        "gpu": "0"}},
            {"labels": {**base, "alertname": "InhibitProbeWarning", "severity": "warning",
                        "gpu": "1"}},
        ],
    )  # fmt: skip
    wait_until(
        lambda: (
            pipeline.webhook.alerts("InhibitProbeCritical")
            and pipeline.webhook.alerts("InhibitProbeWarning")
        ),
        timeout=30,
        what="the probe alerts",
    )
    # A period, not an event: nothing may come in it. Two more group intervals, and the muted
    # one would have been sent by now.
    time.sleep(2 * GROUP_INTERVAL_S)
    warned_cards = {a["labels"]["gpu"] for _, a in pipeline.webhook.alerts("InhibitProbeWarning")}
    assert warned_cards == {"1"}


# --- 20 rigs through file-based discovery ----------------------------------------------------

RIGS = 20


@pytest.fixture(scope="module")
def twenty_rigs(tmp_path_factory, fake_nvml_dir):
    with rich_rigs_workdir(tmp_path_factory, "20-rigs", RIGS, "rig{:02d}") as (
        stack,
        workdir,
        rigs,
    ):
        prometheus = stack.enter_context(running_shipped_prometheus(workdir, None))
        write_targets(workdir / "targets" / "rigs.yml", rigs)

        wait_rigs_scraped(prometheus, RIGS, "20 rigs scraped")
        yield prometheus, set(rigs)


def test_overview_queries_answer_for_all_twenty_rigs(twenty_rigs):
    prometheus, rigs = twenty_rigs
    checked = 0
    for title, expr, _ in dashboard_queries(load_dashboard("rig-overview.json")):
        result = query(prometheus, substitute_variables(expr))
        if "ALERTS" in expr:
            continue  # which alerts fire is not the point here; the query was accepted
        answered = {series["metric"].get("rig") for series in result}
        assert answered == rigs, f"{title}: {expr} answered for {sorted(map(str, answered))}"
        checked += 1
    assert checked >= 15


def test_overview_filters_by_rig(twenty_rigs):
    prometheus, _ = twenty_rigs
    for title, expr, _ in dashboard_queries(load_dashboard("rig-overview.json")):
        if "ALERTS" in expr:
            continue
        result = query(prometheus, substitute_variables(expr, {"$rig": "rig07"}))
        assert {s["metric"].get("rig") for s in result} == {"rig07"}, title


def test_not_supported_is_apart_from_no_data(twenty_rigs):
    """A consumer card answers NaN (shown "not supported on this card"); a rig that does not
    exist answers nothing (shown "no data")."""
    prometheus, _ = twenty_rigs
    gpu = {title: expr for title, expr, _ in dashboard_queries(load_dashboard("gpu-detail.json"))}
    expr = gpu["Memory temperature"]
    result = query(prometheus, substitute_variables(expr, {"$rig": "rig03"}))
    values = {s["metric"]["gpu"]: s["value"][1] for s in result}
    assert values == {"0": "60", "1": "NaN"}
    assert query(prometheus, substitute_variables(expr, {"$rig": "no-such-rig"})) == []


@pytest.mark.parametrize("name", ["rig-overview.json", "gpu-detail.json", "host-detail.json"])
def test_every_dashboard_query_is_accepted_and_has_data(twenty_rigs, name):
    prometheus, _ = twenty_rigs
    assert_dashboard_answers(prometheus, name)


# --- a card missing after the exporter restarts ----------------------------------------------


def _start_exporter(port: int, scenario_path: Path) -> ManagedProcess:
    proc = ManagedProcess(
        [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}"],
        env=fake_nvml_env(scenario_path),
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    except TimeoutError as exc:
        proc.stop()
        raise RuntimeError("exporter did not start") from exc
    return proc


def test_card_missing_after_exporter_restart_is_noticed(tmp_path, fake_nvml_dir):
    """The rig comes back from a restart with one card fewer: no series says "lost", only the
    count against the last hours does."""
    scenario_path = tmp_path / "scenario.json"
    write_scenario(scenario_path, make_scenario(2))
    port = free_port()
    exporter = _start_exporter(port, scenario_path)
    try:
        with running_shipped_prometheus(tmp_path, None) as prometheus:
            write_targets(tmp_path / "targets" / "rigs.yml", {"rigm": f"127.0.0.1:{port}"})
            wait_until(
                lambda: query(prometheus, 'instance:rigwatch_gpus:count{rig="rigm"} == 2'),
                timeout=30,
                what="two cards counted",
            )
            exporter.stop()
            write_scenario(scenario_path, make_scenario(1))
            exporter = _start_exporter(port, scenario_path)

            def missing_alert() -> list[dict]:
                body = json.loads(http_get(prometheus + "/api/v1/alerts")[1])
                return [
                    a
                    for a in body["data"]["alerts"]
                    if a["labels"]["alertname"] == "GpuMissing" and a["state"] == "firing"
                ]

            (alert,) = wait_until(missing_alert, timeout=30, what="GpuMissing firing")
            assert alert["labels"]["rig"] == "rigm"
            assert alert["labels"]["severity"] == "critical"
            assert alert["annotations"]["summary"] == (
                "rigm shows only 1 of the 2 GPUs it had in the last 6 hours"
            )
    finally:
        exporter.stop()
        for home in tmp_path.glob("prometheus-*"):
            remove_tree(home)


# --- the alert bot's own health, from the real bot ---------------------------------------------


def _firing(prometheus: str, alertname: str) -> list[dict]:
    body = json.loads(http_get(prometheus + "/api/v1/alerts")[1])
    return [
        a
        for a in body["data"]["alerts"]
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    ]


def test_bot_that_cannot_reach_telegram_raises_delivery_failing(tmp_path):
    """The real alert bot with Telegram unreachable: its own metrics, scraped by the real
    Prometheus, make the shipped AlertBotDeliveryFailing rule fire."""
    bot_port = free_port()
    bot = ManagedProcess(
        [sys.executable, "-m", "alert_bot"],
        env={
            "TELEGRAM_BOT_TOKEN": "123456:stack-test-token",
            "TELEGRAM_CHAT_ID": "1",
            "TELEGRAM_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "ALERT_BOT_WEBHOOK_TOKEN": TOKEN,
            "ALERT_BOT_LISTEN": f"127.0.0.1:{bot_port}",
            "ALERT_BOT_DB": str(tmp_path / "bot.db"),
        },
    )
    try:
        wait_for_http(f"http://127.0.0.1:{bot_port}/healthz", timeout=30)
        notification = {
            "version": "4",
            "status": "firing",
            "receiver": "bot-critical",
            "groupKey": '{}:{alertname="GpuLost", rig="rig1"}',
            "groupLabels": {"alertname": "GpuLost", "rig": "rig1"},
            "commonLabels": {"alertname": "GpuLost", "rig": "rig1", "severity": "critical"},
            "commonAnnotations": {"summary": "GPU 1 on rig1 is lost"},
            "externalURL": "http://127.0.0.1:9093",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "GpuLost", "rig": "rig1", "severity": "critical"},
                    "annotations": {"summary": "GPU 1 on rig1 is lost"},
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=rigwatch_gpu_up",
                    "fingerprint": "0123456789abcdef",
                }
            ],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{bot_port}/alertmanager",
            data=json.dumps(notification).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert 200 <= response.status < 300
        with running_shipped_prometheus(
            tmp_path, None, bot_address=f"127.0.0.1:{bot_port}"
        ) as prom:
            (alert,) = wait_until(
                lambda: _firing(prom, "AlertBotDeliveryFailing"),
                timeout=90,
                interval=0.5,
                what="AlertBotDeliveryFailing from the bot's own metrics",
            )
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["job"] == "alert-bot"
            assert alert["annotations"]["summary"].startswith(
                f"The alert bot at 127.0.0.1:{bot_port} has failed "
            )
            assert alert["annotations"]["summary"].endswith(
                "times to send to Telegram in 15 minutes and delivered nothing"
            )
            depth = query(prom, "rigwatch_bot_queue_depth")
            assert depth and float(depth[0]["value"][1]) >= 1
    finally:
        bot.stop()
        for home in tmp_path.glob("prometheus-*"):
            remove_tree(home)


# --- the compose file's Alertmanager entrypoint ----------------------------------------------


def test_compose_alertmanager_entrypoint_writes_the_token_and_uses_it(tmp_path):
    """The shell line docker-compose.yml runs in the Alertmanager container, run here with
    Debian's binary and local paths: it writes the token from the environment to the file the
    shipped config reads (owner-only), and Alertmanager then authenticates with it."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["alertmanager"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    token_file = tmp_path / "webhook_token"
    port = free_port()
    with WebhookReceiver("s3cret from .env") as webhook:
        config = write_alertmanager_overlay(tmp_path, webhook.url, "placeholder")
        config.write_text(
            config.read_text().replace(str(tmp_path / "webhook_token"), str(token_file))
        )
        token_file.unlink()
        # What the container's shell receives: compose turns $$ into $.
        script = service["command"][0].replace("$$", "$")
        for container_path, local in {
            "/alertmanager/webhook_token": str(token_file),
            "/bin/alertmanager": shutil.which("prometheus-alertmanager"),
            "--config.file=/etc/alertmanager/alertmanager.yml": f"--config.file={config}",
            "--storage.path=/alertmanager": f"--storage.path={tmp_path / 'data'}",
            "--web.listen-address=:9093": f"--web.listen-address=127.0.0.1:{port}",
        }.items():
            assert container_path in script
            script = script.replace(container_path, local)
        alertmanager = ManagedProcess(
            ["/bin/sh", "-c", script],
            env={
                "ALERT_BOT_WEBHOOK_TOKEN": "s3cret from .env",
                "ALERTMANAGER_EXTERNAL_URL": "http://rig.example:9093",
            },
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(base + "/-/ready", timeout=2)[0] == 200, 30, 0.2)
            assert token_file.read_text() == "s3cret from .env"
            assert token_file.stat().st_mode & 0o077 == 0
            post_alerts(
                base, [{"labels": {"alertname": "EntrypointProbe", "severity": "critical"}}]
            )
            (payload, _), *_ = wait_until(
                lambda: webhook.alerts("EntrypointProbe"), timeout=30, what="the probe alert"
            )
            assert payload["externalURL"] == "http://rig.example:9093"
            assert webhook.rejected == 0
        finally:
            alertmanager.stop()
