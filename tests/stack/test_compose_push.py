"""The push centre as docker-compose.push.yml runs it, door included, set up as docs/push.md's
"With Docker" says, in a private Docker engine on stand-in images (tests/containers/): nginx
(push-door) is the only published way in, and finds vmauth again when vmauth is recreated; a
rig's agent on this machine pushes through it with TLS and lands under its login; a wrong
password and a flood are refused, named in the door's log without the password, counted per user
by mtail (push-door-counter) and scraped by the centre's Prometheus, whose PushRigLoginRefused
names the rig; and the access log that mtail reads is rotated by push-door-logrotate without a
refusal going uncounted. Grafana, Alertmanager, the bot and a scraped exporter are not started
(--no-deps): the centre's own parts are under test."""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import engine
from tests.stack.push_door import TlsAgent, htpasswd_line, make_certificate, post_write
from tests.stack.remote_write import series, write_request
from tests.stack.vm_support import (
    CENTRE_USER,
    authed_query,
    basic_auth,
    write_vmauth_config,
    write_web_config,
)
from tests.support import free_port, make_scenario, running_exporter, wait_until, write_scenario

PROJECT = "rigwatchpushtest"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.push.yml"]
# The centre's parts.
SERVICES = [
    "prometheus",
    "vmauth",
    "push-relay",
    "push-door",
    "push-door-counter",
    "push-door-logrotate",
]
READER = ("rigwatch", "reader-password")
CENTRE_PASSWORD = "centre-internal-password"
RIGS = {"rig1": "rig1-password", "rig2": "rig2-password", "rig3": "rig3-password"}
# Free host ports: the test passes where rigwatch already listens on 443, 9090 and the rest.
HOST_PORTS = {
    name: str(free_port())
    for name in ("PUSH_PORT", "PROMETHEUS_PORT", "EXPORTER_PORT", "ALERTMANAGER_PORT", "BOT_PORT")
}
DOOR = f"https://127.0.0.1:{HOST_PORTS['PUSH_PORT']}"
PROMETHEUS = f"http://127.0.0.1:{HOST_PORTS['PROMETHEUS_PORT']}"
CENTRE_LOGIN = basic_auth(CENTRE_USER, CENTRE_PASSWORD)
REQUIRED = engine.REQUIRED
engine.skip_module_unless_runnable("push centre compose test")


def log(message: str) -> None:
    print(f"[compose push {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Centre(engine.ComposeProject):
    """The running centre: its door's address and certificate, as a rig knows them."""

    write_url = DOOR + "/api/v1/write"

    @property
    def cert(self) -> Path:
        return self.checkout / "secrets" / "push-door" / "tls" / "fullchain.pem"

    def container(self, service: str) -> str:
        return self.containers()[service]["Id"]

    def counter_metrics(self) -> str:
        """mtail's page, read from inside the compose network (from Prometheus's container,
        whose image has wget), where Prometheus scrapes it."""
        return self.engine.text(
            "exec", self.container("prometheus"),
            "wget", "-qO-", "http://push-door-counter:3903/metrics",
        )  # fmt: skip

    def refused(self, user: str, status: int) -> float:
        wanted = f'rigwatch_push_refused_total{{status="{status}",user="{user}"}} '
        for line in self.counter_metrics().splitlines():
            if line.startswith(wanted):
                return float(line.split()[-1])
        return 0.0

    def door_log(self) -> str:
        result = self.engine.docker("logs", self.container("push-door"))
        return (result.stdout + result.stderr).decode(errors="replace")

    def push(self, user: str, password: str, body: bytes | None = None, path: str = "") -> int:
        """One POST through the door; its status."""
        context = ssl.create_default_context(cafile=str(self.cert))
        url = DOOR + (path or "/api/v1/write")
        body = body if body is not None else write_request()
        return post_write(url, context, basic_auth(user, password), body)


def _prepare(checkout: Path) -> None:
    """A user's checkout with the centre's files made as docs/push.md's "With Docker" says."""
    engine.copy_checkout(checkout)
    engine.write_env(
        checkout,
        {
            "TELEGRAM_BOT_TOKEN": "123456:not-started-here",
            "TELEGRAM_CHAT_ID": "-1001234",
            "ALERT_BOT_WEBHOOK_TOKEN": "not-started-here",
            "GRAFANA_ADMIN_PASSWORD": "not-started-here",
            "PROMETHEUS_PASSWORD": READER[1],
        },
    )
    secrets = checkout / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "prometheus-password").write_text(CENTRE_PASSWORD)
    write_web_config(checkout / "prometheus" / "web.yml", {CENTRE_USER: CENTRE_PASSWORD})
    vmauth = write_vmauth_config(
        secrets / "vmauth.yml", READER, RIGS, "http://prometheus:9090",
        "http://push-relay:8429", CENTRE_PASSWORD,
    )  # fmt: skip
    vmauth.chmod(0o600)
    tls = secrets / "push-door" / "tls"
    tls.mkdir(parents=True)
    for directory in (tls, tls.parent):
        directory.chmod(0o755)
    make_certificate(tls)
    (tls / "privkey.pem").chmod(0o600)
    users = secrets / "push-door" / "push-users"
    users.write_text("".join(htpasswd_line(u, p) for u, p in RIGS.items()))
    # www-data (33) in the door's image reads it on every login.
    os.chown(users, 0, 33)
    users.chmod(0o640)


@pytest.fixture(scope="module")
def centre(tmp_path_factory) -> Iterator[Centre]:
    started = time.monotonic()
    with engine.engine_with_stand_ins("push centre compose test", log, REQUIRED) as docker:
        log(f"stand-in images ready after {time.monotonic() - started:.0f} s")
        checkout = tmp_path_factory.mktemp("push-checkout")
        _prepare(checkout)
        centre = Centre(docker, checkout, PROJECT, COMPOSE_FILES, HOST_PORTS)
        try:
            centre.compose("up", "-d", "--build", "--no-deps", *SERVICES, timeout=600)
            log(f"up -d --build done after {time.monotonic() - started:.0f} s")
            try:
                # An empty write with a rig's login: door, vmauth, relay and Prometheus answer.
                wait_until(lambda: centre.push("rig2", RIGS["rig2"]) == 204, 90, 1, what="the door")
            except TimeoutError:
                raise AssertionError(
                    "the centre did not take a push:\n" + centre.describe()
                ) from None
            log(f"the door takes pushes after {time.monotonic() - started:.0f} s")
            yield centre
        finally:
            centre.compose("down", "-v", "--rmi", "all", timeout=180)
            log(f"engine stopped and removed after {time.monotonic() - started:.0f} s")


def test_the_door_is_the_only_published_way_in(centre):
    published = {
        service: sorted(
            f"{b['HostIp']}:{b['HostPort']}->{port}"
            for port, bindings in (info["HostConfig"]["PortBindings"] or {}).items()
            for b in bindings
        )
        for service, info in centre.containers().items()
    }
    assert published == {
        # The door on the public port; vmauth's 8427 is not published; Prometheus on the
        # loopback only, behind its own login.
        "push-door": [f":{HOST_PORTS['PUSH_PORT']}->443/tcp"],
        "vmauth": [],
        "push-door-counter": [],
        "push-door-logrotate": [],
        "push-relay": [],
        "prometheus": [f"127.0.0.1:{HOST_PORTS['PROMETHEUS_PORT']}->9090/tcp"],
    }, published
    # Inside the compose network too, the door's limiting server (which trusts the name in its
    # header) answers nobody but nginx; vmauth answers its neighbours.
    prometheus = centre.container("prometheus")
    inner = centre.engine.docker(
        "exec", prometheus, "wget", "-qO-", "http://push-door:8426/api/v1/write", check=False
    )
    assert inner.returncode != 0 and b"refused" in inner.stderr, inner
    health = centre.engine.text("exec", prometheus, "wget", "-qO-", "http://vmauth:8427/health")
    assert health.strip() == "OK", health
    # Through the door, only POST /api/v1/write: the reader's read API stays inside.
    context = ssl.create_default_context(cafile=str(centre.cert))
    for path in ("/api/v1/query?query=up", "/-/quit", "/"):
        req = urllib.request.Request(DOOR + path, headers=basic_auth(*READER))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10, context=context)
        assert refused.value.code == 404, (path, refused.value.code)


def test_a_rig_s_agent_pushes_through_the_door_and_lands_under_its_login(
    centre, tmp_path, fake_nvml_dir
):
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(1))
    with (
        running_exporter(scenario) as (_, exporter),
        TlsAgent(tmp_path / "rig2", "rig2", exporter.removeprefix("http://"), centre, RIGS["rig2"]),
    ):
        rows = wait_until(
            lambda: authed_query(PROMETHEUS, 'rigwatch_gpu_temperature_celsius{rig="rig2"}',
                                 CENTRE_LOGIN),
            90, 1, what="rig2's pushed series in the centre",
        )  # fmt: skip
    assert {row["metric"]["job"] for row in rows} == {"rigwatch"}
    assert {row["metric"]["instance"] for row in rows} == {"rig2"}


def test_refusals_are_limited_named_without_password_and_counted_per_user(centre):
    # rig1 with the password changed on one side only.
    wrong = [centre.push("rig1", "an-old-password") for _ in range(5)]
    assert wrong == [401] * 5
    # rig3 floods: past its burst of 30 the door answers 429.
    body = write_request(series([("__name__", "rigwatch_push_probe"), ("job", "rigwatch")]))
    flood = [centre.push("rig3", RIGS["rig3"], body) for _ in range(60)]
    assert set(flood) == {204, 429} and flood.count(429) >= 20, flood
    log_text = centre.door_log()
    assert 'user "rig1": password mismatch' in log_text, log_text[-3000:]
    assert "limiting requests" in log_text and "an-old-password" not in log_text
    # mtail counts each refusal under its user, as the door's access log (in the shared
    # volume) names it.
    wait_until(
        lambda: (centre.refused("rig1", 401), centre.refused("rig3", 429))
        == (5, flood.count(429)),
        30, 0.5, what="mtail's counts",
    )  # fmt: skip

    # The centre's Prometheus scrapes the counter (job push-door, every 15 s) and, while rig1
    # keeps being refused as its agent keeps retrying, PushRigLoginRefused names it (pending:
    # it fires after 2 minutes).
    def rig1_alert():
        assert centre.push("rig1", "an-old-password") == 401
        rows = authed_query(PROMETHEUS, 'ALERTS{alertname="PushRigLoginRefused"}', CENTRE_LOGIN)
        return [r["metric"] for r in rows if r["metric"].get("user") == "rig1"]

    (alert,) = wait_until(rig1_alert, 150, 2, what="PushRigLoginRefused for rig1")
    assert alert["alertstate"] in ("pending", "firing"), alert
    (up,) = authed_query(PROMETHEUS, 'up{job="push-door"}', CENTRE_LOGIN)
    assert up["value"][1] == "1", up


def test_the_access_log_is_rotated_and_every_refusal_is_still_counted(centre):
    before = [centre.push("rig9", "unknown") for _ in range(4)]
    assert before == [401] * 4
    wait_until(lambda: centre.refused("rig9", 401) == 4, 30, 0.5, what="mtail's count")
    rotator = centre.container("push-door-logrotate")
    status_file = "/var/lib/logrotate/rigwatch-push-door.status"
    # What the service runs every 5 minutes, forced: the log is not yet 20 MiB.
    centre.engine.text(
        "exec", rotator, "logrotate", "--force", "--state", status_file,
        "/etc/logrotate.d/rigwatch-push-door",
    )  # fmt: skip
    listing = centre.engine.text("exec", rotator, "ls", "-l", "/var/log/nginx")
    sizes = {line.split()[-1]: int(line.split()[4]) for line in listing.splitlines()[1:]}
    assert sizes["rigwatch-push.log"] == 0 < sizes["rigwatch-push.log.1"], listing
    after = [centre.push("rig9", "unknown") for _ in range(3)]
    assert after == [401] * 3
    wait_until(lambda: centre.refused("rig9", 401) == 7, 30, 0.5, what="the count after rotation")
    # The rotation configuration is the image's, owned by root (logrotate skips any other).
    config = centre.engine.text("exec", rotator, "cat", "/etc/logrotate.d/rigwatch-push-door")
    shipped = Path(engine.REPO / "deploy" / "centre-push" / "push-door.logrotate").read_text()
    assert config == shipped


def test_the_door_finds_a_recreated_vmauth_again(centre):
    """vmauth recreated (a new container, perhaps a new address): the door looks its name up
    again and pushes go through within seconds, with no restart of the door."""
    door_before = centre.container("push-door")
    centre.compose("up", "-d", "--no-deps", "--force-recreate", "vmauth", timeout=120)
    wait_until(lambda: centre.push("rig2", RIGS["rig2"]) == 204, 60, 1, what="a push")
    assert centre.container("push-door") == door_before
