"""Who may write and read: the remote-write receiver, Alertmanager's API and the alert bot's
webhook, each with no credentials, wrong ones and right ones (real servers on loopback); and
no secret on a command line, neither in the shipped compose files and units nor in a running
agent's argv."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml

from tests.alert_bot.botkit import BOT_TOKEN, CHAT, WEBHOOK_TOKEN, alert, bot_env, bot_process
from tests.alert_bot.botkit import notification as am_notification
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.stack.stack_support import PROMETHEUS_DIR, remove_tree
from tests.stack.vm_support import (
    RIG_AGENT_DIR,
    Agent,
    PushCentre,
    authed_query,
    basic_auth,
    request,
    write_web_config,
)
from tests.support import (
    REPO,
    ManagedProcess,
    free_port,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

PASSWORD = "right-password"
WRONG = [
    ("no credentials", {}),
    ("wrong password", basic_auth("rig1", "wrong-password")),
    ("unknown user", basic_auth("mallory", PASSWORD)),
    ("bearer instead of basic", {"Authorization": f"Bearer {PASSWORD}"}),
]
RIGHT = basic_auth("rig1", PASSWORD)


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("push-security")
    centre = PushCentre(workdir, {"rig1": PASSWORD}, "rig1")
    try:
        centre.start()
        yield centre.base
    finally:
        centre.stop()
        remove_tree(workdir)


@pytest.mark.parametrize(("case", "headers"), WRONG, ids=[c for c, _ in WRONG])
def test_receiver_refuses_writes_without_the_right_login(centre, case, headers):
    status, _ = request(centre + "/api/v1/write", b"x", headers, "POST")
    assert status == 401
    status, _ = request(centre + "/api/v1/query?query=up", headers=headers)
    assert status == 401


def test_receiver_takes_the_right_login(centre):
    # Past the login, the body is judged: this one is no snappy-compressed protobuf.
    status, body = request(centre + "/api/v1/write", b"x", RIGHT, "POST")
    assert status == 400, body
    assert request(centre + "/api/v1/query?query=up", headers=RIGHT)[0] == 200


def test_agent_with_a_wrong_password_writes_nothing(centre, tmp_path, fake_nvml_dir):
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(1))
    with running_exporter(scenario) as (_, exporter):
        address = exporter.removeprefix("http://")
        with Agent(tmp_path / "bad", "badrig", address, centre + "/api/v1/write", "rig1",
                   "wrong-password") as bad:  # fmt: skip
            with Agent(tmp_path / "good", "goodrig", address, centre + "/api/v1/write", "rig1",
                       PASSWORD):  # fmt: skip
                wait_until(lambda: authed_query(centre, 'up{rig="goodrig"}', RIGHT), 30)
                # The password reaches vmagent through the file only: not in its argv.
                cmdline = Path(f"/proc/{bad.proc.pid}/cmdline").read_bytes().decode()
                assert "wrong-password" not in cmdline
                assert str(bad.password_file) in cmdline
            assert authed_query(centre, '{rig="badrig"}', RIGHT) == []


# --- Alertmanager behind --web.config.file ----------------------------------------------------


def test_alertmanager_api_with_a_login(tmp_path):
    web = write_web_config(tmp_path / "am-web.yml", {"rig1": PASSWORD})
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = free_port()
    proc = ManagedProcess(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web}",
            "--cluster.listen-address=",
        ]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: request(base + "/-/ready", headers=RIGHT)[0] == 200, 30)
        for case, headers in WRONG:
            assert request(base + "/api/v2/status", headers=headers)[0] == 401, case
            assert request(base + "/api/v2/alerts", b"[]", headers, "POST")[0] == 401, case
        assert request(base + "/api/v2/status", headers=RIGHT)[0] == 200
        json_headers = {**RIGHT, "Content-Type": "application/json"}
        assert request(base + "/api/v2/alerts", b"[]", json_headers, "POST")[0] == 200
    finally:
        proc.stop()


# --- the alert bot's webhook ------------------------------------------------------------------


def test_bot_webhook_needs_its_token(tmp_path):
    with contextlib.ExitStack() as stack:
        telegram = stack.enter_context(FakeTelegram(BOT_TOKEN))
        env = bot_env(tmp_path, telegram.url, port=free_port())
        _, base = stack.enter_context(bot_process(env))
        body = am_notification(alert(name="RigSilent", rig="rig9", gpu=None))
        cases = [
            ("no credentials", {}),
            ("wrong token", {"Authorization": f"Bearer {WEBHOOK_TOKEN}x"}),
            ("basic instead of bearer", basic_auth("alertmanager", WEBHOOK_TOKEN)),
        ]
        data = json.dumps(body).encode()
        for case, headers in cases:
            headers = {**headers, "Content-Type": "application/json"}
            assert request(base + "/alertmanager", data, headers, "POST")[0] == 401, case
        right = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
        assert request(base + "/alertmanager", data, right, "POST")[0] == 200
        # Only the authenticated notification reaches the chat.
        wait_until(lambda: telegram.sent(), timeout=20, what="the one message")
        assert len(telegram.sent()) == 1
        assert "rig9" in telegram.texts()[0]


@pytest.mark.parametrize(("password", "works"), [(PASSWORD, True), ("wrong-password", False)])
def test_bot_reads_a_prometheus_behind_a_login(centre, tmp_path, password, works):
    """The centre's Prometheus answers only with a login: the bot takes it in PROMETHEUS_URL
    (as docker-compose.push.yml gives it), its charts work, a wrong password is one clear
    line in the chat, and the password appears in no log line."""
    wait_until(lambda: authed_query(centre, "up", RIGHT), what="the centre's first self-scrape")
    with contextlib.ExitStack() as stack:
        telegram = stack.enter_context(FakeTelegram(BOT_TOKEN))
        env = bot_env(tmp_path, telegram.url, port=free_port())
        env["PROMETHEUS_URL"] = f"http://rig1:{password}@{centre.removeprefix('http://')}"
        proc, _ = stack.enter_context(bot_process(env))
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        telegram.inject_message(CHAT, "/graph up 1h")
        wait_until(lambda: telegram.sent(CHAT), timeout=30, what="the chart's answer")
        reply = telegram.sent(CHAT)[0]
        if works:
            assert reply.method == "sendPhoto", telegram.visible_texts(CHAT)
            assert reply.files["photo"].startswith(b"\x89PNG")
        else:
            assert telegram.visible_texts(CHAT) == [
                "⚠️ Prometheus refused the bot's login (HTTP 401): check the user and password"
                " in PROMETHEUS_URL"
            ]
        assert password not in proc.output()


# --- no secret on a command line --------------------------------------------------------------

SECRET_FLAGS = ("password=", "basicAuth.password=", "bearerToken=", "token=")


def _command_lines() -> dict[str, list[str]]:
    found = {}
    for path in (RIG_AGENT_DIR / "docker-compose.yml", REPO / "docker-compose.push.yml"):
        for name, service in yaml.safe_load(path.read_text())["services"].items():
            found[f"{path.name}:{name}"] = [str(a) for a in service.get("command", [])]
    unit = (RIG_AGENT_DIR / "rigwatch-vmagent.service").read_text()
    exec_start = unit.split("ExecStart=", 1)[1].split("\n\n", 1)[0].split("\nRestart", 1)[0]
    found["rigwatch-vmagent.service"] = exec_start.replace("\\\n", " ").split()
    return found


def test_no_secret_on_a_command_line():
    lines = _command_lines()
    assert any("passwordFile" in a for a in lines["docker-compose.yml:vmagent"])
    assert any("passwordFile" in a for a in lines["rigwatch-vmagent.service"])
    for where, args in lines.items():
        for arg in args:
            flag = arg.lstrip("-").lower()
            assert not any(flag.startswith(s.lower()) or f".{s.lower()}" in flag
                           for s in SECRET_FLAGS), (where, arg)  # fmt: skip


def test_push_config_differs_from_the_shipped_one_only_by_the_self_login():
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    push = yaml.safe_load((PROMETHEUS_DIR / "prometheus-push.yml").read_text())
    for job in push["scrape_configs"]:
        if job["job_name"] == "prometheus":
            auth = job.pop("basic_auth")
            assert set(auth) == {"username", "password_file"}
    assert push == shipped


def _compose_web_flags() -> list[str]:
    """The --web.enable-* flags docker-compose.push.yml gives the centre's Prometheus."""
    service = yaml.safe_load((REPO / "docker-compose.push.yml").read_text())["services"]
    return [a for a in service["prometheus"]["command"] if a.startswith("--web.enable-")]


def test_a_rig_login_cannot_stop_or_reload_the_centre_a_signal_reloads_it(tmp_path):
    """With the shipped push flags, a rig's login gets no lifecycle endpoint; SIGHUP reloads."""
    import signal

    assert "--web.enable-remote-write-receiver" in _compose_web_flags()
    centre = PushCentre(tmp_path, {"rig1": PASSWORD}, "rig1")
    enabled = [a for a in centre.args if not a.startswith("--web.enable-")]
    centre.args = enabled + _compose_web_flags()
    try:
        centre.start()
        for path in ("/-/quit", "/-/reload"):
            status, body = request(centre.base + path, b"", RIGHT, "POST")
            assert status == 403, (path, status, body)
        assert request(centre.base + "/-/ready", headers=RIGHT)[0] == 200

        def reload_ok() -> str:
            _, body = request(centre.base + "/metrics", headers=RIGHT)
            gauge = "prometheus_config_last_reload_successful "
            return next(ln for ln in body.splitlines() if ln.startswith(gauge)).split()[1]

        # A broken file read on SIGHUP flips the gauge to 0; a fixed one read on the next, to 1.
        config = Path(
            next(a for a in centre.args if a.startswith("--config.file=")).split("=", 1)[1]
        )
        good = config.read_text()
        assert reload_ok() == "1"
        assert centre.proc is not None
        config.write_text("scrape_configs: [")
        centre.proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reload_ok() == "0", 30, 0.2)
        config.write_text(good)
        centre.proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reload_ok() == "1", 30, 0.2)
    finally:
        centre.stop()
