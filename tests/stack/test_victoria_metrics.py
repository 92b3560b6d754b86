"""VictoriaMetrics single-node + vmalert as the centre, with the real engines (Debian's
victoria-metrics package): VM scrapes three exporters on the simulated NVML through the
shipped scrape configuration, vmalert evaluates the shipped rule files unchanged and notifies
the real Alertmanager with the shipped routing; every dashboard query and the bot's commands
answer against VM."""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass

import pytest
import yaml

from alert_bot.alerts.alert_queries import expression_from_generator_url
from tests.alert_bot.botkit import BOT_TOKEN, CHAT, bot_env, running_bot
from tests.alert_bot.fake_telegram import FakeTelegram, parse_telegram_html
from tests.stack.stack_support import (
    RULE_FILES,
    WebhookReceiver,
    alerting_rules,
    assert_dashboard_answers,
    dashboard_queries,
    load_dashboard,
    query,
    recorded_names,
    rich_rigs_workdir,
    running_shipped_alertmanager,
    substitute_variables,
    wait_rigs_scraped,
    write_prometheus_overlay,
    write_targets,
)
from tests.stack.vm_support import (
    VMALERT_SOURCE_FLAGS,
    request,
    running_victoria_metrics,
    running_vmalert,
)
from tests.support import (
    REPO,
    free_port,
    wait_until,
)

RIGS = 3
TOKEN = "vm-webhook-token"


@dataclass
class VmCentre:
    vm: str
    vmalert: str
    webhook: WebhookReceiver
    alertmanager: str
    rigs: set[str]


@pytest.fixture(scope="module")
def centre(tmp_path_factory, fake_nvml_dir):
    with rich_rigs_workdir(tmp_path_factory, "vm-centre", RIGS, "rig{}") as (stack, workdir, rigs):
        webhook = stack.enter_context(WebhookReceiver(TOKEN))
        alertmanager = stack.enter_context(
            running_shipped_alertmanager(workdir, webhook.url, TOKEN)
        )
        # The shipped prometheus.yml, as the test overlay makes it (1 s, loopback); VM reads
        # its scrape_configs and ignores what is vmalert's (rule_files, alerting).
        scrape = write_prometheus_overlay(workdir, free_port(), None)
        write_targets(workdir / "targets" / "rigs.yml", rigs)
        vm = stack.enter_context(running_victoria_metrics(workdir, scrape))
        # The shipped rule files themselves, not the overlay's copies.
        _, vmalert = stack.enter_context(running_vmalert(RULE_FILES, vm, alertmanager))

        wait_rigs_scraped(vm, RIGS, "rigs scraped by VM")
        yield VmCentre(vm, vmalert, webhook, alertmanager, set(rigs))


def test_vmalert_loads_the_shipped_rules_unchanged(centre):
    status, body = request(centre.vmalert + "/api/v1/rules")
    assert status == 200
    groups = json.loads(body)["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {r["alert"] for r in alerting_rules()} | recorded_names()


def test_every_rule_evaluates_without_error_in_vmalert(centre):
    def groups() -> list[dict]:
        return json.loads(request(centre.vmalert + "/api/v1/rules")[1])["data"]["groups"]

    # Every rule has been evaluated, but for the hourly groups of rules/wear.yml, which may not
    # have run yet: they must only not fail.
    wait_until(
        lambda: all(
            rule.get("lastEvaluation", "") > "2000"
            for group in groups()
            if group.get("interval", 0) < 3600
            for rule in group["rules"]
        ),
        timeout=60,
        what="every rule evaluated",
    )
    for group in groups():
        for rule in group["rules"]:
            assert "lastError" in rule, rule
            if group.get("interval", 0) < 3600:
                assert rule["lastEvaluation"] > "2000", rule
    failing = {
        rule["name"]: rule["lastError"]
        for group in groups()
        for rule in group["rules"]
        if rule["lastError"]
    }
    assert failing == {}


def test_recording_rules_write_back_to_vm(centre):
    def recorded_for_every_rig():
        # Rigs are scraped and recorded independently: wait for all, not for the first.
        result = query(centre.vm, "instance:rigwatch_gpus:count")
        return result if {r["metric"]["rig"] for r in result} == centre.rigs else None

    result = wait_until(recorded_for_every_rig, timeout=30, what="recorded for every rig")
    assert {r["value"][1] for r in result} == {"2"}


def test_watchdog_reaches_alertmanager_and_the_webhook(centre):
    (payload, alert), *_ = wait_until(
        lambda: centre.webhook.alerts("Watchdog", "firing"), timeout=30, what="Watchdog"
    )
    assert payload["receiver"] == "bot-watchdog"
    assert alert["labels"]["alertname"] == "Watchdog"
    assert alert["annotations"]["summary"] == "The alerting pipeline is working (heartbeat)"
    # The link carries the expression where the bot looks for it to draw charts.
    assert expression_from_generator_url(alert["generatorURL"]) == "vector(1)"
    # vmalert writes ALERTS back, as Prometheus keeps it, for the overview's alert table.
    wait_until(lambda: query(centre.vm, 'ALERTS{alertname="Watchdog"}'), timeout=20)


def test_overview_queries_answer_for_every_rig(centre):
    checked = 0
    for title, expr, _ in dashboard_queries(load_dashboard("rig-overview.json")):
        result = query(centre.vm, substitute_variables(expr))
        if "ALERTS" in expr:
            continue
        answered = {series["metric"].get("rig") for series in result}
        assert answered == centre.rigs, f"{title}: {expr} answered for {answered}"
        one = query(centre.vm, substitute_variables(expr, {"$rig": "rig2"}))
        assert {s["metric"].get("rig") for s in one} == {"rig2"}, title
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("name", ["rig-overview.json", "gpu-detail.json", "host-detail.json"])
def test_every_dashboard_query_is_accepted_and_has_data(centre, name):
    assert_dashboard_answers(centre.vm, name)


def test_not_supported_reads_as_no_data_on_vm(centre):
    """The documented difference: MetricsQL drops NaN from answers, so a consumer card's
    "not supported" panel (a value * NaN on Prometheus) shows "no data" on VM instead."""
    gpu = {title: expr for title, expr, _ in dashboard_queries(load_dashboard("gpu-detail.json"))}
    result = query(centre.vm, substitute_variables(gpu["Memory temperature"], {"$rig": "rig3"}))
    assert {s["metric"]["gpu"]: s["value"][1] for s in result} == {"0": "60"}


def test_bot_commands_answer_against_vm(centre, tmp_path):
    with contextlib.ExitStack() as stack:
        telegram = stack.enter_context(FakeTelegram(BOT_TOKEN))
        env = bot_env(
            tmp_path, telegram.url, prometheus=centre.vm, alertmanager=centre.alertmanager
        )
        stack.enter_context(running_bot(env))

        def ask(text: str):
            before = len(telegram.sent(CHAT))
            telegram.inject_message(CHAT, text)
            wait_until(lambda: len(telegram.sent(CHAT)) > before, timeout=15, what=text)
            return telegram.sent(CHAT)[before]

        def visible(call) -> str:
            return parse_telegram_html(call.params.get("text", call.params.get("caption", "")))

        for command in ("/status", "/gpu", "/cpu"):
            text = visible(ask(command))
            assert "⚠️" not in text, text
            assert all(rig in text for rig in centre.rigs), (command, text)
        assert "H100" in visible(ask("/gpu rig1"))
        for graph in ("/graph gpu", "/graph cpu 1h", "/graph mem", "/graph disk"):
            reply = ask(graph)
            assert reply.method == "sendPhoto", (graph, visible(reply))
            assert reply.files["photo"].startswith(b"\x89PNG")


def test_vm_override_runs_what_the_tests_run():
    services = yaml.safe_load((REPO / "docker-compose.vm.yml").read_text())["services"]
    vmalert = [arg.replace("$$", "$") for arg in services["vmalert"]["command"]]
    assert VMALERT_SOURCE_FLAGS[1] in vmalert
    assert "-rule=/etc/prometheus/rules/*.yml" in vmalert
    vm = services["prometheus"]["command"]
    assert "-promscrape.config.strictParse=false" in vm and "-httpListenAddr=:9090" in vm
    # The same release as Debian's package the tests run.
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in ("prometheus", "vmalert"):
        assert services[name]["image"].endswith(":v" + version.split("+")[0]), name
