"""Who may write and read: the push centre (vmauth, the push relay and Prometheus or
VictoriaMetrics, as docker-compose.push.yml and docker-compose.vm-push.yml run them),
Alertmanager's API and the alert bot's webhook, each with no credentials, wrong ones and right
ones (real servers on loopback); a rig's attacks on the centre (forged, invented or doubled
rig labels, ALERTS and the centre's jobs, other paths, a 256 MiB label value) refused or
neutralised; refusals counted and alerted; a password rotated without a refusal; and no secret
on a command line, neither in the shipped compose files and units nor in a running agent's
argv."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.alert_bot.botkit import BOT_TOKEN, CHAT, WEBHOOK_TOKEN, alert, bot_env, bot_process
from tests.alert_bot.botkit import notification as am_notification
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.stack.remote_write import REMOTE_WRITE_HEADERS, series, write_request
from tests.stack.stack_support import (
    PROMETHEUS_DIR,
    fake_sysfs,
    remove_tree,
    rich_scenario,
    run_tool,
)
from tests.stack.vm_support import (
    RIG_AGENT_DIR,
    Agent,
    PushCentre,
    basic_auth,
    firing_alerts,
    metric_value,
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
READER_PASSWORD = "reader-password"
USERS = {"rigwatch": READER_PASSWORD, "rig1": PASSWORD, "rig2": "rig2-password"}
READER = basic_auth("rigwatch", READER_PASSWORD)
WRONG = [
    ("no credentials", {}),
    ("wrong password", basic_auth("rig1", "wrong-password")),
    ("unknown user", basic_auth("mallory", PASSWORD)),
    ("bearer instead of basic", {"Authorization": f"Bearer {PASSWORD}"}),
]
RIGHT = basic_auth("rig1", PASSWORD)


@contextlib.contextmanager
def _running_centre(tmp_path_factory, engine: str):
    workdir = tmp_path_factory.mktemp(f"push-security-{engine}")
    centre = PushCentre(workdir, USERS, "rigwatch", engine=engine)
    try:
        centre.start()
        yield centre
    finally:
        centre.stop()
        remove_tree(workdir)


@pytest.fixture(scope="module")
def prometheus_centre(tmp_path_factory):
    """The Prometheus centre of docker-compose.push.yml."""
    with _running_centre(tmp_path_factory, "prometheus") as centre:
        yield centre


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def centre(request, tmp_path_factory, prometheus_centre):
    """Each centre: docker-compose.push.yml's and docker-compose.vm-push.yml's; the attacks
    must fail the same way against both."""
    if request.param == "prometheus":
        yield prometheus_centre
        return
    with _running_centre(tmp_path_factory, request.param) as centre:
        yield centre


@pytest.mark.parametrize(("case", "headers"), WRONG, ids=[c for c, _ in WRONG])
def test_receiver_refuses_writes_without_the_right_login(centre, case, headers):
    # vmauth 1.79: 401 without an Authorization header, 400 for one it does not know.
    for path, data in (("/api/v1/write", b"x"), ("/api/v1/query?query=up", None)):
        status, body = request(centre.base + path, data, headers, "POST" if data else "GET")
        if headers:
            assert status == 400 and "cannot find the provided auth token" in body, body
        else:
            assert status == 401, body


def test_receiver_takes_the_right_login(centre):
    # Past the login, the body is judged (by the relay): this one is no snappy protobuf.
    status, body = request(centre.base + "/api/v1/write", b"x", RIGHT, "POST")
    assert status == 400, body
    assert "cannot decompress" in body
    assert request(centre.base + "/api/v1/query?query=up", headers=READER)[0] == 200


def _firing(centre: PushCentre, alertname: str) -> list[dict]:
    return firing_alerts(centre.base, READER, alertname)


def test_agent_with_a_wrong_password_writes_nothing(prometheus_centre, tmp_path, fake_nvml_dir):
    centre = prometheus_centre
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(1))
    with running_exporter(scenario) as (_, exporter):
        address = exporter.removeprefix("http://")
        with Agent(tmp_path / "bad", "rig1", address, centre.write_url, "rig1",
                   "wrong-password") as bad:  # fmt: skip
            with Agent(tmp_path / "good", "rig2", address, centre.write_url, "rig2",
                       USERS["rig2"]):  # fmt: skip
                wait_until(lambda: centre.query('up{rig="rig2"}'), 30)
                # The password reaches vmagent through the file only: not in its argv.
                cmdline = Path(f"/proc/{bad.proc.pid}/cmdline").read_bytes().decode()
                assert "wrong-password" not in cmdline
                assert str(bad.password_file) in cmdline
                # The centre counts the refusals (scraped from vmauth) and says so.
                wait_until(lambda: _firing(centre, "PushLoginsRefused"), 60, 0.5)
            assert centre.query('{rig="rig1"}') == []
            # The rig's own agent logs the refusal; vmauth logs neither password nor token.
            assert "cannot find the provided auth token" in bad.proc.output()
            assert centre.auth_proc is not None
            token = basic_auth("rig1", "wrong-password")["Authorization"].split()[1]
            assert "wrong-password" not in centre.auth_proc.output()
            assert token not in centre.auth_proc.output()


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


@pytest.mark.parametrize(
    ("password", "works"), [(READER_PASSWORD, True), ("wrong-password", False)]
)
def test_bot_reads_a_prometheus_behind_a_login(prometheus_centre, tmp_path, password, works):
    """The centre answers only with a login: the bot takes the reader's in PROMETHEUS_URL
    (vmauth's, as docker-compose.push.yml gives it), its charts work, a wrong password is one clear
    line in the chat, and the password appears in no log line."""
    centre = prometheus_centre
    wait_until(lambda: centre.query("up"), what="the centre's first self-scrape")
    with contextlib.ExitStack() as stack:
        telegram = stack.enter_context(FakeTelegram(BOT_TOKEN))
        env = bot_env(tmp_path, telegram.url, port=free_port())
        base = centre.base.removeprefix("http://")
        env["PROMETHEUS_URL"] = f"http://rigwatch:{password}@{base}"
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
                # vmauth 1.79 answers a login it does not know with 400.
                "⚠️ Prometheus refused the bot's login (HTTP 400): check the user and password"
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


def test_push_config_differs_from_the_shipped_one_only_by_the_self_login_and_the_door():
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    push = yaml.safe_load((PROMETHEUS_DIR / "prometheus-push.yml").read_text())
    names = ("vmauth", "push-relay", "push-door")
    door = [j for j in push["scrape_configs"] if j["job_name"] in names]
    assert [j["static_configs"] for j in door] == [
        [{"targets": ["vmauth:8427"]}],
        [{"targets": ["push-relay:8429"]}],
        [{"targets": ["push-door-counter:3903"]}],
    ]
    push["scrape_configs"] = [j for j in push["scrape_configs"] if j not in door]
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
    centre = PushCentre(tmp_path, USERS, "rigwatch")
    enabled = [a for a in centre.args if not a.startswith("--web.enable-")]
    centre.args = enabled + _compose_web_flags()
    try:
        centre.start()
        for path in ("/-/quit", "/-/reload"):
            # Even the centre's internal login finds no lifecycle endpoint on Prometheus...
            status, body = request(centre.prometheus + path, b"", centre.centre_login, "POST")
            assert status == 403, (path, status, body)
            # ... and through vmauth, no login reaches those paths at all.
            for login in (RIGHT, READER):
                status, body = request(centre.base + path, b"", login, "POST")
                # /-/reload is vmauth's own: it wants the key no one knows.
                refusal = "invalid authKey" if path == "/-/reload" else "missing route"
                assert status == 400 and refusal in body, (path, status, body)
        assert request(centre.prometheus + "/-/ready", headers=centre.centre_login)[0] == 200

        def reload_ok() -> str:
            _, body = request(centre.prometheus + "/metrics", headers=centre.centre_login)
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


# --- a rig speaks only for itself: attacks through vmauth and the push relay ------------------

RIG2 = basic_auth("rig2", USERS["rig2"])


def _push(centre: PushCentre, login: dict, *timeseries: bytes) -> tuple[int, str]:
    body = write_request(*timeseries)
    return request(centre.write_url, body, {**REMOTE_WRITE_HEADERS, **login}, "POST")


def _stored(centre: PushCentre, name: str) -> list[dict]:
    return [row["metric"] for row in centre.query(f'{{__name__="{name}"}}')]


@pytest.mark.parametrize(
    ("case", "labels"),
    [
        ("forged rig", [("rig", "rig1"), ("instance", "rig1")]),
        ("invented rig", [("rig", "rig7"), ("instance", "rig7")]),
        ("rig label twice", [("rig", "rig1"), ("rig", "rig7"), ("instance", "rig2")]),
        ("the relay's own label names", [("rigwatch_relay_rig", "rig1"), ("rig", "rig1")]),
        ("no rig at all", [("instance", "rig2")]),
    ],
)
def test_a_rig_writes_only_under_its_own_name(centre, case, labels):
    name = "attack_" + case.replace(" ", "_").replace("'", "")
    status, body = _push(centre, RIG2, series([("__name__", name), ("job", "rigwatch"), *labels]))
    assert status == 204, body
    stored = wait_until(lambda: _stored(centre, name), 20, what=f"{case} stored")
    assert [row["rig"] for row in stored] == ["rig2"], stored
    assert "rigwatch_relay_rig" not in stored[0]


def test_a_rig_cannot_pass_its_own_extra_label(centre):
    """vmauth keeps the route's extra_label over one the pusher puts in the URL."""
    name = "attack_url_extra_label"
    body = write_request(series([("__name__", name), ("job", "rigwatch")]))
    url = centre.write_url + "?extra_label=rig=rig1&extra_label=job=prometheus"
    status, answer = request(url, body, {**REMOTE_WRITE_HEADERS, **RIG2}, "POST")
    assert status == 204, answer
    stored = wait_until(lambda: _stored(centre, name), 20, what="the push stored")
    assert [(row["rig"], row["job"]) for row in stored] == [("rig2", "rigwatch")]


def test_a_rig_writes_no_alerts_and_no_centre_job(centre):
    forged = [
        [("__name__", "ALERTS"), ("alertname", "GpuTemperatureCritical"), ("job", "rigwatch"),
         ("alertstate", "firing")],
        [("__name__", "ALERTS_FOR_STATE"), ("alertname", "GpuTemperatureCritical"),
         ("job", "rigwatch")],
        [("__name__", "attack_centre_job"), ("job", "prometheus")],
        [("__name__", "attack_centre_job"), ("job", "alertmanager")],
        [("__name__", "attack_centre_job")],
    ]  # fmt: skip
    # A marker in the same request: once it is stored, the rest of the request was judged.
    marker = [("__name__", "attack_marker"), ("job", "rigwatch")]
    status, body = _push(centre, RIG2, *(series(labels) for labels in forged), series(marker))
    assert status == 204, body
    wait_until(lambda: _stored(centre, "attack_marker"), 20, what="the marker")
    assert _stored(centre, "attack_centre_job") == []
    assert centre.query('ALERTS{alertname="GpuTemperatureCritical"}') == []
    assert centre.query('ALERTS_FOR_STATE{alertname="GpuTemperatureCritical"}') == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/query?query=up",
        "/api/v1/query_range?query=up&start=0&end=1&step=1",
        "/api/v1/series?match[]=up",
        "/api/v1/admin/tsdb/delete_series?match[]=up",
        "/api/v1/status/config",
        "/graph",
        "/metrics",
        "/-/quit",
        "/federate?match[]=up",
        "/api/v1/write/../query?query=up",
        "/api/v1/writex",
    ],
)
def test_a_rig_login_reaches_nothing_but_the_write_path(centre, path):
    for method, data in (("GET", None), ("POST", b"")):
        status, body = request(centre.base + path, data, RIG2, method)
        # /metrics is vmauth's own page (counts per user, no passwords), not Prometheus's.
        if path == "/metrics":
            assert status == 200 and "prometheus_tsdb" not in body
            continue
        assert status == 400 and "missing route" in body, (path, method, status, body)


def test_the_reader_login_reads_and_cannot_write(centre):
    marker = [("__name__", "attack_reader_write"), ("job", "rigwatch")]
    status, body = request(
        centre.write_url, write_request(series(marker)), {**REMOTE_WRITE_HEADERS, **READER}, "POST"
    )
    assert status == 400 and "missing route" in body, body
    for path in ("/api/v1/admin/tsdb/delete_series?match[]=up", "/-/quit", "/api/v1/import"):
        status, body = request(centre.base + path, b"", READER, "POST")
        assert status == 400 and "missing route" in body, (path, status, body)
    # The reader reads: the centre's scrapes of itself, vmauth and the relay, once they come.
    wait_until(lambda: centre.query("up"), 30, what="the reader's query")
    assert _stored(centre, "attack_reader_write") == []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# The relay decodes a request before it can judge its unpacked size: the bound on what one
# request costs it is the decoded size of a -maxInsertRequestSize (4 MiB) body, which snappy
# at its best ratio (about 1:21) makes under 100 MiB, per concurrent insert.
RELAY_PEAK_KIB = 512 * 1024
VMAUTH_PEAK_KIB = 128 * 1024


def test_a_256_mib_label_value_is_refused_and_the_centre_stays_bounded(centre):
    assert centre.relay_proc is not None and centre.auth_proc is not None
    huge = series([("__name__", "attack_huge"), ("job", "rigwatch"), ("x", b"a" * (256 << 20))])
    try:
        status, body = _push(centre, RIG2, huge)
    except (ConnectionResetError, urllib.error.URLError, BrokenPipeError):
        # The relay answers 400 and closes as soon as the body passes the limit; a client
        # still sending sees the connection reset instead of the answer.
        status, body = 400, "maxInsertRequestSize (connection reset while sending)"
    assert status == 400 and "maxInsertRequestSize" in body, body[:300]
    # Also a body under the packed limit that unpacks far past it.
    bomb = series([("__name__", "attack_bomb"), ("job", "rigwatch"), ("x", b"a" * (60 << 20))])
    status, body = _push(centre, RIG2, bomb)
    assert status == 400 and "too big unpacked request" in body, body[:300]
    # The refusal is a log line at the centre naming the rig (vmauth's forced extra_label).
    wait_until(lambda: "extra_label=rig=rig2" in centre.relay_proc.output(), 10)
    line = next(
        ln for ln in centre.relay_proc.output().splitlines() if "too big packed request" in ln
    )
    assert "extra_label=rig=rig2" in line
    assert _rss_kib(centre.relay_proc.pid) < RELAY_PEAK_KIB
    assert _rss_kib(centre.auth_proc.pid) < VMAUTH_PEAK_KIB
    assert _stored(centre, "attack_huge") == [] and _stored(centre, "attack_bomb") == []


def test_a_rig_cannot_invent_label_names_or_send_long_values(centre):
    """The relay keeps only the exporter's label names (so a series has a bounded number of
    labels, and none can push `rig` out of VictoriaMetrics's label count) and drops a series
    whose labels pass 4 KiB."""
    many = [("__name__", "attack_many"), ("job", "rigwatch"), ("gpu", "0")]
    many += [(f"a{i:02d}", "v") for i in range(60)]
    long_value = [("__name__", "attack_long"), ("job", "rigwatch"), ("name", "v" * 5000)]
    marker = [("__name__", "attack_bounds_marker"), ("job", "rigwatch")]
    status, body = _push(centre, RIG2, series(many), series(long_value), series(marker))
    assert status == 204, body
    wait_until(lambda: _stored(centre, "attack_bounds_marker"), 20, what="the marker")
    (stored,) = wait_until(lambda: _stored(centre, "attack_many"), 20, what="the many labels")
    assert stored == {"__name__": "attack_many", "job": "rigwatch", "gpu": "0", "rig": "rig2"}
    assert _stored(centre, "attack_long") == []


def test_the_relay_keeps_every_label_name_the_exporter_sends(tmp_path, fake_nvml_dir):
    """The relay's list of label names holds every name a real exporter emits (the rich
    scenario: processes, runs, sensors, filesystems) and the agent's own."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "push-relay.yml").read_text())
    (keep,) = [
        r for r in rules if r["action"] == "labelkeep" and "rigwatch_relay" not in r["regex"]
    ]
    allowed = set(keep["regex"].split("|"))
    (bound,) = [r for r in rules if r["action"] == "drop" and len(r["source_labels"]) > 1]
    assert set(bound["source_labels"]) == allowed
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, rich_scenario())
    sysfs = fake_sysfs(tmp_path / "sys")
    with running_exporter(scenario, f"--path.sysfs={sysfs}") as (_, exporter):
        status, body = request(exporter + "/metrics")
    assert status == 200
    names = {"__name__", "job", "instance", "rig"}
    longest = 0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            names |= set(sample.labels)
            longest = max(longest, len(";".join([sample.name, *sample.labels.values()])))
    assert len(names) > 30
    assert longest < 1000  # the relay drops a series past 4000
    assert names <= allowed, names - allowed


def test_a_wrong_password_is_counted_and_never_logged(centre):
    assert centre.auth_proc is not None

    def refused() -> float:
        body = request(centre.base + "/metrics")[1]
        return metric_value(body, 'vmauth_http_request_errors_total{reason="invalid_auth_token"}')

    before = refused()
    status, _ = _push(centre, basic_auth("rig2", "a-wrong-password"), series([("__name__", "x")]))
    assert status == 400
    wait_until(lambda: refused() == before + 1, 10, what="the refusal counted")
    log = centre.auth_proc.output()
    assert "a-wrong-password" not in log
    token = basic_auth("rig2", "a-wrong-password")["Authorization"].split()[1]
    assert token not in log


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.lstrip("-").split("=", 1) for a in args if "=" in a)


def test_the_relay_unit_runs_the_composed_relays_limits():
    """deploy/centre-push's systemd unit and docker-compose.push.yml give the relay the same
    limits, queue, login and relabelling (the tests run the compose file's flags)."""
    services = yaml.safe_load((REPO / "docker-compose.push.yml").read_text())["services"]
    composed = _flags(services["push-relay"]["command"])
    unit = (REPO / "deploy" / "centre-push" / "rigwatch-push-relay.service").read_text()
    exec_start = unit.split("ExecStart=", 1)[1].split("\nRestart", 1)[0]
    in_unit = _flags(exec_start.replace("\\\n", " ").split())
    assert set(in_unit) == set(composed)
    for flag in ("maxInsertRequestSize", "maxConcurrentInserts", "remoteWrite.queues",
                 "remoteWrite.maxDiskUsagePerURL", "remoteWrite.basicAuth.username"):  # fmt: skip
        assert in_unit[flag] == composed[flag], flag
    assert Path(in_unit["remoteWrite.relabelConfig"]).name == "push-relay.yml"


def test_rotating_one_rigs_password_refuses_and_loses_nothing(tmp_path, fake_nvml_dir):
    """docs/push.md's rotation through a second user: at no step is a push refused (vmagent
    1.79 would drop what vmauth refuses with 400), and the old password stops working."""
    users = {"rigwatch": READER_PASSWORD, "rig2": "old-password", "rig3": "rig3-password"}
    (tmp_path / "centre").mkdir()
    centre = PushCentre(tmp_path / "centre", users, "rigwatch")
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(1))
    with contextlib.ExitStack() as stack:
        centre.start()
        stack.callback(centre.stop)
        _, exporter = stack.enter_context(running_exporter(scenario))
        address = exporter.removeprefix("http://")
        agent = Agent(tmp_path / "rig2", "rig2", address, centre.write_url, "rig2", "old-password")
        stack.enter_context(agent)
        wait_until(lambda: centre.query('up{rig="rig2"}'), 30, what="rig2's first push")

        def agent_dropped() -> float:
            body = request(f"http://127.0.0.1:{agent.port}/metrics")[1]
            return sum(
                float(line.split()[-1])
                for line in body.splitlines()
                if line.startswith("vmagent_remotewrite_packets_dropped_total")
            )

        # 1. A second user for the same rig, with the new password.
        centre.reload_users({**users, "rig2-b": "new-password"}, {"rig2-b": "rig2"})
        # 2. The rig moves to it.
        assert agent_dropped() == 0
        agent.stop()
        agent.user = "rig2-b"
        agent.password_file.write_text("new-password")
        agent.start()
        # 3. The old user goes.
        rotated = {"rigwatch": READER_PASSWORD, "rig2-b": "new-password", "rig3": "rig3-password"}
        centre.reload_users(rotated, {"rig2-b": "rig2"})
        marker = time.time()
        wait_until(
            lambda: float(centre.query('timestamp(up{rig="rig2"})')[0]["value"][1]) > marker + 1,
            30,
            what="rig2's pushes under its new user",
        )
        assert agent_dropped() == 0
        body = request(centre.base + "/metrics")[1]
        refused = 'vmauth_http_request_errors_total{reason="invalid_auth_token"}'
        assert metric_value(body, refused) == 0
        assert metric_value(body, 'vmauth_user_requests_total{username="rig2-b"}') > 0
        # The old password no longer writes; the other rig's user was never touched.
        status, body = request(centre.write_url, b"x", basic_auth("rig2", "old-password"), "POST")
        assert status == 400 and "cannot find the provided auth token" in body
        status, body = request(centre.write_url, b"x", basic_auth("rig3", "rig3-password"), "POST")
        assert status == 400 and "cannot decompress" in body  # past the login, at the relay
        assert {row["metric"]["rig"] for row in centre.query("up{job='rigwatch'}")} == {"rig2"}


def _compose_services(tmp_path: Path, *files: str) -> dict:
    """The services as docker-compose merges the files (the repository's own .env unread)."""
    env = tmp_path / "env"
    env.write_text(
        "TELEGRAM_BOT_TOKEN=1:x\nTELEGRAM_CHAT_ID=1\nALERT_BOT_WEBHOOK_TOKEN=x\n"
        "GRAFANA_ADMIN_PASSWORD=x\nPROMETHEUS_PASSWORD=x\n"
    )
    command = ["docker-compose", "--env-file", str(env)]
    for name in files:
        command += ["-f", str(REPO / name)]
    result = run_tool(*command, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_vm_centre_has_the_same_door(tmp_path):
    """docker-compose.vm-push.yml is layered on docker-compose.push.yml: the door's services,
    its published port and its counter's scrape are the same for the VictoriaMetrics centre
    (tests/stack/test_compose_push.py runs them with Prometheus)."""
    push = _compose_services(tmp_path, "docker-compose.yml", "docker-compose.push.yml")
    vm = _compose_services(
        tmp_path, "docker-compose.yml", "docker-compose.push.yml", "docker-compose.vm.yml",
        "docker-compose.vm-push.yml",
    )  # fmt: skip
    door = ("push-door", "push-door-counter", "push-door-logrotate")
    assert {n: vm[n] for n in door} == {n: push[n] for n in door}
    # In both, the door's is the one published port of the centre's parts.
    for services in (push, vm):
        published = {n for n in ("vmauth", "push-relay", *door) if services[n].get("ports")}
        assert published == {"push-door"}, published
    # VictoriaMetrics scrapes the same prometheus-push.yml, so the counter's job too.
    assert "-promscrape.config=/etc/prometheus/prometheus-push.yml" in vm["prometheus"]["command"]
