"""The HA Alertmanager pair with the real engines: two Debian Alertmanagers with the shipped
routing, clustered over loopback (or started unpeered, a partition), Debian's Prometheus
sending to both, and the real alert bot behind both posting to a fake Telegram. Each
notification reaches the chat once; a silence from the chat's button applies on both."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.alert_bot.botkit import (
    BOT_TOKEN,
    CHAT,
    WEBHOOK_TOKEN,
    bot_env,
    bot_process,
    metric_value,
)
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.stack.stack_support import (
    PROMETHEUS_DIR,
    write_alertmanager_overlay,
    write_prometheus_overlay,
)
from tests.stack.vm_support import request
from tests.support import REPO, ManagedProcess, free_port, stopped_after, wait_until

PROBE_RULES = """
groups:
  - name: ha-probe
    rules:
      - alert: {name}
        expr: vector(1)
        labels: {{severity: warning, rig: rig1}}
        annotations: {{summary: "{name} on rig1", description: "the HA pair's probe"}}
"""

PEER_TIMEOUT_S = 3  # --cluster.peer-timeout: the second member waits this long


@contextlib.contextmanager
def alertmanager_member(
    workdir: Path, webhook_url: str, cluster_port: int | None, peer_port: int | None
) -> Iterator[str]:
    """One member of the pair with the shipped routing (short waits); cluster_port None means
    no clustering at all."""
    workdir.mkdir(parents=True)
    config = write_alertmanager_overlay(workdir, webhook_url, WEBHOOK_TOKEN)
    port = free_port()
    if cluster_port is None:
        cluster = ["--cluster.listen-address="]
    else:
        cluster = [
            f"--cluster.listen-address=127.0.0.1:{cluster_port}",
            f"--cluster.advertise-address=127.0.0.1:{cluster_port}",
            f"--cluster.peer=127.0.0.1:{peer_port}",
            "--cluster.gossip-interval=100ms",
            "--cluster.pushpull-interval=1s",
            "--cluster.settle-timeout=3s",
            # The second member waits this long for the first one's notification log entry.
            f"--cluster.peer-timeout={PEER_TIMEOUT_S}s",
        ]
    proc = ManagedProcess(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *cluster,
        ]
    )
    base = f"http://127.0.0.1:{port}"
    with stopped_after(proc, base + "/-/ready", "alertmanager"):
        yield base


class Pair:
    def __init__(self, telegram, bot, members, prometheus) -> None:
        self.telegram = telegram
        self.bot = bot
        self.members = members
        self.prometheus = prometheus

    def chat_messages(self, text: str) -> list[str]:
        return [t for t in self.telegram.texts(CHAT) if text in t]

    def webhook_sends(self, member: str) -> float:
        body = request(member + "/metrics")[1]
        total = 0.0
        for line in body.splitlines():
            if line.startswith('alertmanager_notifications_total{integration="webhook"'):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def ha_pair(workdir: Path, probe: str, clustered: bool) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        telegram = stack.enter_context(FakeTelegram(BOT_TOKEN))
        bot_port = free_port()
        webhook_url = f"http://127.0.0.1:{bot_port}/alertmanager"
        ports = (free_port(), free_port()) if clustered else (None, None)
        members = [
            stack.enter_context(
                alertmanager_member(workdir / f"am{i}", webhook_url, ports[i], ports[1 - i])
            )
            for i in range(2)
        ]
        if clustered:
            wait_until(
                lambda: all(
                    len(json.loads(request(m + "/api/v2/status")[1])["cluster"]["peers"]) == 2
                    for m in members
                ),
                timeout=30,
                what="the pair to see each other",
            )
        env = bot_env(workdir, telegram.url, alertmanager=members[0], port=bot_port)
        _, bot = stack.enter_context(bot_process(env))
        prom_port = free_port()
        config_path = write_prometheus_overlay(workdir, prom_port, 1)
        config = yaml.safe_load(config_path.read_text())
        config["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [m.removeprefix("http://") for m in members]}
        ]
        config["scrape_configs"] = [j for j in config["scrape_configs"]
                                    if j["job_name"] == "prometheus"]  # fmt: skip
        # Only the probe: the shipped rules are not what this test is about.
        for path in (workdir / "rules").glob("*.yml"):
            path.unlink()
        (workdir / "rules" / "probe.yml").write_text(PROBE_RULES.format(name=probe))
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = ManagedProcess(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
            ]
        )
        prometheus = f"http://127.0.0.1:{prom_port}"
        stack.enter_context(stopped_after(proc, prometheus + "/-/ready", "prometheus"))
        yield Pair(telegram, bot, members, prometheus)


def _active_silences(member: str) -> list[dict]:
    return [
        s
        for s in json.loads(request(member + "/api/v2/silences")[1])
        if s["status"]["state"] == "active"
    ]


def test_clustered_pair_sends_once_and_gossips_silences(tmp_path):
    with ha_pair(tmp_path, "HaProbeClustered", clustered=True) as pair:
        # Both members have the alert, from Prometheus.
        for member in pair.members:
            wait_until(lambda m=member: json.loads(request(m + "/api/v2/alerts")[1]), timeout=30)
        wait_until(lambda: pair.chat_messages("HaProbeClustered"), timeout=30, what="message")
        # A period, not an event: nothing more may be sent in it. Past the second member's
        # peer timeout (its wait for the first one's log entry) with a margin, it has sent
        # nothing of its own.
        time.sleep(PEER_TIMEOUT_S + 2)
        assert len(pair.chat_messages("HaProbeClustered")) == 1
        assert sum(pair.webhook_sends(m) for m in pair.members) == 1

        # The chat's button silences through the bot's Alertmanager (the first member)...
        message = pair.telegram.sent(CHAT)[-1]
        buttons = json.loads(message.params["reply_markup"])["inline_keyboard"][0]
        one_hour = next(b["callback_data"] for b in buttons if b["text"].endswith("1h"))
        pair.telegram.inject_callback(CHAT, one_hour)
        # ...and gossip brings it to the second, where it mutes the same alert.
        (silence,) = wait_until(lambda: _active_silences(pair.members[1]), timeout=20)
        assert silence["createdBy"] == f"telegram:user{CHAT}"
        for member in pair.members:
            wait_until(
                lambda m=member: (
                    json.loads(request(m + "/api/v2/alerts")[1])[0]["status"]["state"]
                    == "suppressed"
                ),
                timeout=20,
                what="the alert silenced on both",
            )
        # A silence made through the second member reaches the first just the same.
        now = time.time()
        body = {
            "matchers": [{"name": "rig", "value": "rig7", "isRegex": False}],
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
            "createdBy": "test",
            "comment": "through the second member",
        }
        headers = {"Content-Type": "application/json"}
        status, _ = request(
            pair.members[1] + "/api/v2/silences", json.dumps(body).encode(), headers, "POST"
        )
        assert status == 200
        wait_until(lambda: len(_active_silences(pair.members[0])) == 2, timeout=20)


def test_partitioned_pair_both_send_and_the_bot_sends_once(tmp_path):
    with ha_pair(tmp_path, "HaProbeApart", clustered=False) as pair:
        # Unpeered, each member sends on its own...
        wait_until(
            lambda: all(pair.webhook_sends(m) >= 1 for m in pair.members),
            timeout=30,
            what="both members to notify",
        )
        wait_until(lambda: pair.chat_messages("HaProbeApart"), timeout=30, what="message")
        # ...and the bot drops the second copy: it has taken it in, as a duplicate.
        wait_until(
            lambda: metric_value(pair.bot, "rigwatch_bot_notifications_duplicate_total") >= 1,
            timeout=30,
            what="the second copy taken in",
        )
        assert len(pair.chat_messages("HaProbeApart")) == 1


def test_ha_config_differs_from_the_shipped_one_only_by_the_second_member():
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    ha = yaml.safe_load((PROMETHEUS_DIR / "prometheus-ha.yml").read_text())
    pair = ["alertmanager:9093", "alertmanager-2:9093"]
    assert ha["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": pair}]}]
    ha["alerting"] = shipped["alerting"]
    for job in ha["scrape_configs"]:
        if job["job_name"] == "alertmanager":
            assert job["static_configs"] == [{"targets": pair}]
            job["static_configs"] = [{"targets": ["alertmanager:9093"]}]
    assert ha == shipped


def test_ha_override_clusters_the_two_members():
    services = yaml.safe_load((REPO / "docker-compose.ha.yml").read_text())["services"]
    first = services["alertmanager"]["command"][0]
    second = services["alertmanager-2"]["command"][0]
    assert "--cluster.peer=alertmanager-2:9094" in first
    assert "--cluster.peer=alertmanager:9094" in second
    shipped = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    # The members run the shipped routing, with the token written the same way.
    assert services["alertmanager-2"]["volumes"][0] == shipped["alertmanager"]["volumes"][0]
    assert first.split("--cluster.")[0] == second.split("--cluster.")[0]
