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

import base64
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import engine
from tests.stack.push_door import Flood, TlsAgent, htpasswd_line, make_certificate, post_write
from tests.stack.remote_write import series, write_request
from tests.stack.stack_support import section_blocks
from tests.stack.vm_support import (
    CENTRE_USER,
    authed_query,
    basic_auth,
    write_vmauth_config,
    write_web_config,
)
from tests.support import free_port, make_scenario, running_exporter, wait_until, write_scenario

PROJECT = "rigwatchpushtest"
DOCKER_SECTION = "### With Docker"
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
# Free host ports for what the test starts and publishes (the door, Prometheus): it passes
# where rigwatch already listens on 443 and 9090.
HOST_PORTS = {name: str(free_port()) for name in ("PUSH_PORT", "PROMETHEUS_PORT")}
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

    def get_from(self, network: str, url: str) -> str:
        """A GET from a throwaway container on one of the project's networks: the answer's
        body, or the error that came instead."""
        script = (
            "import sys, urllib.request\n"
            "try:\n"
            "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
            "except Exception as exc:\n"
            "    print(f'error: {exc}')\n"
        )
        return self.engine.text(
            "run", "--rm", "--network", f"{self.project}_{network}", "python:3.12-slim",
            "python3", "-c", script, url,
        ).strip()  # fmt: skip

    def logs(self, service: str) -> str:
        result = self.engine.docker("logs", self.container(service))
        return (result.stdout + result.stderr).decode(errors="replace")

    def door_log(self) -> str:
        return self.logs("push-door")

    def address(self, service: str, network: str) -> str:
        """The container's address on one of the project's networks."""
        networks = self.containers()[service]["NetworkSettings"]["Networks"]
        return networks[f"{self.project}_{network}"]["IPAddress"]

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
    secrets.mkdir(mode=0o700)  # step 1
    (secrets / "prometheus-password").write_text(CENTRE_PASSWORD)
    write_web_config(checkout / "prometheus" / "web.yml", {CENTRE_USER: CENTRE_PASSWORD})
    vmauth = write_vmauth_config(
        secrets / "vmauth.yml", READER, RIGS, "http://prometheus:9090",
        "http://push-relay:8429", CENTRE_PASSWORD,
    )  # fmt: skip
    vmauth.chmod(0o600)
    # Step 3 as written (its certificate from the working directory, here one for 127.0.0.1
    # made for the test, as certbot would leave it), then one line more per rig as it says.
    make_certificate(checkout)
    (door_block,) = section_blocks(DOCKER_SECTION)
    script = door_block.replace("RIG2-PASSWORD", RIGS["rig2"])
    subprocess.run(["bash", "-euc", script], cwd=checkout, check=True, capture_output=True)
    with (checkout / "secrets" / "push-door" / "push-users").open("a") as users:
        users.writelines(htpasswd_line(u, p) for u, p in RIGS.items() if u != "rig2")


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
    # Inside the centre too: on the door's own network, its limiting server (which trusts the
    # name in its header) answers nobody but nginx, and vmauth answers; from the rest of the
    # centre (Prometheus's networks) the door cannot be reached at all.
    inner = centre.get_from("door", "http://push-door:8426/api/v1/write")
    assert inner.startswith("error:") and "refused" in inner, inner
    assert centre.get_from("door", "http://vmauth:8427/health") == "OK"
    outside = centre.get_from("default", "http://push-door:443/")
    assert outside.startswith("error:") and "Name or service not known" in outside, outside
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
    # rig3 floods from four connections: past its burst of 30 (10 a second after it) the door
    # answers 429.
    body = write_request(series([("__name__", "rigwatch_push_probe"), ("job", "rigwatch")]))
    with Flood(centre, basic_auth("rig3", RIGS["rig3"]), body) as flood:
        wait_until(lambda: flood.statuses[429] >= 10, 60, 0.2, what="rig3 refused 10 times")
    assert set(flood.statuses) == {204, 429}, flood.statuses
    token = base64.b64encode(b"rig1:an-old-password").decode()
    log_text = centre.door_log()
    assert 'user "rig1": password mismatch' in log_text, log_text[-3000:]
    assert "limiting requests" in log_text
    for where in (log_text, centre.logs("vmauth")):
        assert "an-old-password" not in where and token not in where
    # mtail counts each refusal under its user, as the door's access log (in the shared
    # volume) names it.
    wait_until(
        lambda: (centre.refused("rig1", 401), centre.refused("rig3", 429))
        == (5, flood.statuses[429]),
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
    assert (alert["severity"], alert.get("rig")) == ("warning", None), alert
    (up,) = authed_query(PROMETHEUS, 'up{job="push-door"}', CENTRE_LOGIN)
    assert up["value"][1] == "1", up


def test_the_access_log_is_rotated_and_every_refusal_is_still_counted(centre):
    before = [centre.push("rig9", "unknown") for _ in range(4)]
    assert before == [401] * 4
    wait_until(lambda: centre.refused("rig9", 401) == 4, 30, 0.5, what="mtail's count")
    rotator = centre.container("push-door-logrotate")
    status_file = "/var/lib/logrotate/rigwatch-push-door.status"
    # What the service runs every minute, forced: the log is not yet 20 MiB.
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
    shipped = (engine.REPO / "deploy" / "centre-push" / "push-door.logrotate").read_text()
    assert config == shipped


def test_the_door_finds_a_recreated_vmauth_again(centre):
    """vmauth removed and created again at another address on the door's network: the door
    looks its name up again and pushes go through within seconds, with no restart of the
    door."""
    door_before, address_before = centre.container("push-door"), centre.address("vmauth", "door")
    centre.compose("rm", "--stop", "--force", "vmauth", timeout=120)
    # A placeholder takes the address vmauth had, which Docker would otherwise give it again.
    placeholder = centre.engine.text(
        "run", "-d", "--network", f"{PROJECT}_door", "python:3.12-slim", "sleep", "600"
    ).strip()
    try:
        centre.compose("up", "-d", "--no-deps", "vmauth", timeout=120)
    finally:
        centre.engine.docker("rm", "-f", placeholder, check=False)
    assert centre.address("vmauth", "door") != address_before
    wait_until(lambda: centre.push("rig2", RIGS["rig2"]) == 204, 60, 1, what="a push")
    assert centre.container("push-door") == door_before
