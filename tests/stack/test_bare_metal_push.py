"""docs/push.md's centre without Docker, walked in one clean Debian container of the private engine
(the python stand-in image: Debian bookworm, nothing of rigwatch): the Debian packages the doc
names, the doc's centre blocks as written (Prometheus's flags and login, the push relay's and
vmauth's units, Alertmanager, the bot installed by docs/stack.md's bot block and given the
centre's settings), the public door's block (nginx with TLS, mtail), then the doc's rig block, a
rig's vmagent pushing through the door with its own unit. The pushed rig's alert fires at the
centre and reaches the chat (a fake Telegram on the docker bridge) naming the rig; a push forged
for another rig lands, and reaches the chat, under the login's rig; the rig's login reaches
nothing but the write path. Services start as their unit files say
(test_bare_metal.Box.start_unit); the container has no systemd."""

from __future__ import annotations

import base64
import json
import re
import shlex
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.stack import engine
from tests.stack.push_door import make_certificate
from tests.stack.remote_write import REMOTE_WRITE_HEADERS, series, write_request
from tests.stack.stack_support import section_blocks, section_text
from tests.stack.test_bare_metal import Box, clean_box, doc_blocks
from tests.stack.test_compose_up import REQUIRED, GatewayTelegram
from tests.support import wait_until

CONTAINER = "rigwatch-bare-metal-push"
CENTRE_SECTION = "### Without Docker (Debian packages)"
DOOR_SECTION = "### TLS and the public door (nginx)"
# The door's public address on the box: nginx on 443, with a certificate for 127.0.0.1.
DOOR_WRITE_URL = "https://127.0.0.1/api/v1/write"
RIG_SECTION = "## The rig"
PASSWORDS = {"CENTRE-PASSWORD": "centre-walk-pw", "READER-PASSWORD": "reader-walk-pw",
             "RIG2-PASSWORD": "rig2-walk-pw"}  # fmt: skip
TOKEN = "123456:bare-metal-push-token"
CHAT = -1002020
EXTERNAL_URL = "http://centre.example:9093"  # only a link in the messages: nothing opens it
SETTINGS = {"TELEGRAM-BOT-TOKEN": TOKEN, "TELEGRAM-CHAT-ID": str(CHAT),
            "ALERTMANAGER-URL": EXTERNAL_URL}  # fmt: skip


def log(message: str) -> None:
    print(f"[bare-metal push {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_block(box: Box, block: str, workdir: str) -> list[str]:
    """A doc block as a script, its placeholders filled in; its `systemctl enable --now` /
    `restart` / `reload` lines are returned as the units to start (the container has no
    systemd), in order."""
    units, script = [], []
    for line in block.splitlines():
        systemctl = re.fullmatch(
            r"(?:(.+?) && )?systemctl (?:enable --now|restart|reload) ([^#]+?)\s*(?:#.*)?",
            line.strip(),
        )
        if systemctl:
            # `nginx -t && systemctl reload nginx`: the check runs, the unit is started.
            if systemctl.group(1):
                script.append(systemctl.group(1))
            units += systemctl.group(2).split()
        else:
            script.append(line)
    text = "\n".join(script)
    for placeholder, value in {**PASSWORDS, **SETTINGS}.items():
        text = text.replace(placeholder, value)
    box.sh(text, timeout=300, workdir=workdir)
    return units


def unit_path(box: Box, unit: str) -> str:
    for directory in ("/etc/systemd/system", "/lib/systemd/system"):
        path = f"{directory}/{unit}.service"
        if box.sh(f"test -e {path} && echo yes || echo no").strip() == "yes":
            return path
    raise AssertionError(f"no unit file for {unit}")


def in_box_request(
    box: Box, url: str, user: str = "", password: str = "", body_file: str = ""
) -> dict:
    """An HTTP request made inside the container (the services listen on its loopback):
    status and body."""
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if body_file:
        headers.update(REMOTE_WRITE_HEADERS)
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        f"data = open({body_file!r}, 'rb').read() if {bool(body_file)} else None\n"
        f"req = urllib.request.Request({url!r}, data=data, headers={headers!r})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=10); out = (r.status, r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    out = (e.code, e.read().decode())\n"
        "except OSError as e:\n"
        "    out = (0, str(e))\n"
        "print(json.dumps({'status': out[0], 'body': out[1]}))\n"
    )
    return json.loads(box.sh(f"python3 -c {shlex.quote(script)}").strip().splitlines()[-1])


def reader_query(box: Box, promql: str) -> list[dict]:
    url = "http://127.0.0.1:8427/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = in_box_request(box, url, "rigwatch", PASSWORDS["READER-PASSWORD"])
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])["data"]["result"]


def push(box: Box, *timeseries: bytes, password: str = PASSWORDS["RIG2-PASSWORD"]) -> dict:
    """A remote write with rig2's login through the centre's public door, as a rig could send
    it."""
    box.write("/root/push.bin", write_request(*timeseries))
    return in_box_request(box, DOOR_WRITE_URL, "rig2", password, "/root/push.bin")


@pytest.fixture(scope="module")
def docker() -> Iterator[engine.Engine]:
    started = time.monotonic()
    with engine.engine_with_stand_ins("bare-metal push test", log, REQUIRED) as docker:
        try:
            yield docker
        finally:
            log(f"done after {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def telegram(docker: engine.Engine) -> Iterator[GatewayTelegram]:
    """The chat: a fake Telegram where the container reaches this machine."""
    telegram = GatewayTelegram(TOKEN, docker.gateway()).start()
    try:
        yield telegram
    finally:
        telegram.stop()


@pytest.fixture(scope="module")
def walked(docker: engine.Engine, telegram: GatewayTelegram, tmp_path_factory) -> Box:
    return _walk(docker, telegram, tmp_path_factory.mktemp("bare-metal-push"))


def _walk(docker: engine.Engine, telegram: GatewayTelegram, tmp: Path) -> Box:
    started = time.monotonic()
    # What the doc asks for first: the Debian packages its `apt install` names.
    packages = re.search(r"`apt install ([^`]+)`", section_text(CENTRE_SECTION)).group(1)
    box = clean_box(docker, tmp, CONTAINER, packages.split(), [])
    log(f"packages installed after {time.monotonic() - started:.0f} s")
    centre_block, alertmanager_block, bot_settings = section_blocks(CENTRE_SECTION)
    units = run_block(box, centre_block, "/root/rigwatch")
    assert units == ["prometheus", "rigwatch-push-relay", "rigwatch-vmauth"], units
    units += run_block(box, alertmanager_block, "/root/rigwatch")
    # The bot as docs/stack.md installs it (the block push.md points to), then push.md's
    # settings for this centre.
    (bot_install,) = [text for _, text in doc_blocks() if "rigwatch-bot.service" in text]
    units += run_block(box, bot_install, "/root/rigwatch")
    log(f"bot installed after {time.monotonic() - started:.0f} s")
    units += run_block(box, bot_settings, "/root/rigwatch")
    assert units[3:] == ["prometheus-alertmanager", "rigwatch-bot", "rigwatch-bot"], units
    assert box.sh("stat -c %a /etc/rigwatch/bot.env").strip() == "600"
    # The walk's only changes to what the doc installed: 2 s intervals and a short `for` on
    # the two alerts it makes fire, so they come within the test's patience; no scraped rig
    # (the doc's "[]": the shipped target is the compose stack's exporter), so every rig
    # is a pushed one; Telegram's stand-in.
    config = yaml.safe_load(box.read("/etc/prometheus/prometheus.yml"))
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
    box.write("/etc/prometheus/prometheus.yml", yaml.safe_dump(config, sort_keys=False))
    box.write("/etc/prometheus/targets/rigs.yml", "[]\n")
    box.sh(
        "sed -i '/alert: ExporterDown/,/for:/ s/for: 2m/for: 2s/' /etc/prometheus/rules/stack.yml"
        " && sed -i '/alert: GpuTemperatureCritical/,/for:/ s/for: 1m/for: 2s/'"
        " /etc/prometheus/rules/gpu.yml"
        f" && echo TELEGRAM_API_URL={telegram.url} >> /etc/rigwatch/bot.env"
    )
    for unit in dict.fromkeys(units):
        box.start_unit(unit_path(box, unit))
    ready = "http://127.0.0.1:8427/api/v1/query?query=up"
    try:
        wait_until(
            lambda: (
                in_box_request(box, ready, "rigwatch", PASSWORDS["READER-PASSWORD"])["status"]
                == 200
            ),
            timeout=90,
            what="the centre answering its reader through vmauth",
        )
    except TimeoutError:
        tails = "\n".join(box.log_tail(u) for u in units)
        raise AssertionError(f"the centre did not come up:\n{tails}") from None
    log(f"centre up after {time.monotonic() - started:.0f} s")

    # The public door, as its section says: the packages its `apt install` line names, a
    # certificate for the box's 127.0.0.1 where the block expects it (trusted by the box as a
    # real CA's would be), then the block, whose reload and restart start nginx and mtail.
    (door_block,) = section_blocks(DOOR_SECTION)
    (apt_line,) = [ln for ln in door_block.splitlines() if ln.startswith("apt install ")]
    box.sh(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        + apt_line.removeprefix("apt install ") + " >/dev/null",
        timeout=300,
    )  # fmt: skip
    cert, key = make_certificate(tmp)
    box.write("/root/rigwatch/fullchain.pem", cert.read_bytes())
    box.write("/root/rigwatch/privkey.pem", key.read_bytes(), mode=0o600)
    box.write("/usr/local/share/ca-certificates/rigwatch-walk.crt", cert.read_bytes())
    box.sh("update-ca-certificates >/dev/null")
    door_units = run_block(box, door_block.replace(apt_line + "\n", ""), "/root/rigwatch")
    assert door_units == ["nginx", "mtail"], door_units
    for unit in door_units:
        box.start_unit(unit_path(box, unit))
    try:
        wait_until(lambda: push(box)["status"] == 204, 30, 1, what="a push through the door")
    except TimeoutError:
        tails = "\n".join(box.log_tail(u) for u in door_units)
        raise AssertionError(f"the door did not take a push:\n{tails}") from None
    log(f"door up after {time.monotonic() - started:.0f} s")

    # The rig, on the same box: the doc's rig block, pointed at the centre's public door. No
    # exporter runs here, so the agent pushes up=0 for rig2: ExporterDown, from a pushed rig.
    (rig_block,) = [b for b in section_blocks(RIG_SECTION) if "rigwatch-vmagent" in b]
    rig_units = run_block(box, rig_block, "/root/rigwatch")
    assert rig_units == ["rigwatch-vmagent"]
    box.sh(
        f"sed -i 's#^RIGWATCH_CENTRE_URL=.*#RIGWATCH_CENTRE_URL={DOOR_WRITE_URL}#'"
        " /etc/rigwatch/vmagent.env"
        f" && printf %s {PASSWORDS['RIG2-PASSWORD']} > /etc/rigwatch/push-password"
        " && sed -i 's/scrape_interval: 15s/scrape_interval: 2s/; s/scrape_timeout: 10s/"
        "scrape_timeout: 2s/' /etc/rigwatch/scrape.yml"
        # Rig and centre share this box: the agent's own port moves off the relay's 8429.
        " && sed -i 's/-httpListenAddr=127.0.0.1:8429/-httpListenAddr=127.0.0.1:8430/'"
        " /etc/systemd/system/rigwatch-vmagent.service"
    )
    box.start_unit("/etc/systemd/system/rigwatch-vmagent.service")
    return box


def delivered(box: Box, telegram: GatewayTelegram, alertname: str, methods: set[str]) -> list:
    """The chat's messages about one alert, once every one of `methods` has come."""

    def arrived():
        calls = [
            c
            for c in telegram.sent(CHAT)
            if alertname in c.params.get("text", c.params.get("caption", ""))
        ]
        return calls if {c.method for c in calls} >= methods else None

    try:
        return wait_until(arrived, timeout=120, interval=1, what=f"{alertname} in the chat")
    except TimeoutError:
        tails = "\n".join(box.log_tail(u) for u in ("prometheus-alertmanager", "rigwatch-bot"))
        raise AssertionError(
            f"no {sorted(methods)} about {alertname} in the chat: {telegram.texts(CHAT)}\n{tails}"
        ) from None


def test_the_pushed_rig_arrives_under_its_login_and_its_alert_fires(walked):
    try:
        (up,) = wait_until(lambda: reader_query(walked, 'up{rig="rig2"}'), 90, 1, what="rig2")
    except TimeoutError:
        raise AssertionError(walked.log_tail("rigwatch-vmagent")) from None
    assert up["metric"]["job"] == "rigwatch" and up["value"][1] == "0"
    alert = 'ALERTS{alertname="ExporterDown",alertstate="firing",rig="rig2"}'
    (firing,) = wait_until(lambda: reader_query(walked, alert), 90, 1, what="ExporterDown")
    assert firing["metric"]["instance"] == "rig2"  # the pushed rig's, not a scraped target


def test_the_pushed_rig_s_alert_reaches_the_chat_naming_the_rig(walked, telegram):
    """Alertmanager and the bot as the doc sets them up: ExporterDown of the pushed rig in the
    chat, with its chart, which the bot reads through vmauth with the reader's login of
    PROMETHEUS_URL."""
    calls = delivered(walked, telegram, "ExporterDown", {"sendMessage", "sendPhoto"})
    (message,) = [c for c in calls if c.method == "sendMessage"]
    assert "rig <b>rig2</b>" in message.params["text"], message.params["text"]
    assert f'href="{EXTERNAL_URL}/#/silences/new?filter=' in message.params["text"]
    photo = next(c for c in calls if c.method == "sendPhoto")
    assert photo.files["photo"].startswith(b"\x89PNG")


# rig2's login pushes a hot card labelled as rig1's: GpuTemperatureCritical would fire for
# rig1 if the centre believed the labels it is sent.
FORGED = [("job", "rigwatch"), ("rig", "rig1"), ("instance", "rig1"), ("gpu", "0"),
          ("uuid", "GPU-forged")]  # fmt: skip


@pytest.fixture(scope="module")
def forged(walked) -> dict:
    return push(
        walked,
        series([("__name__", "rigwatch_gpu_temperature_celsius"), *FORGED], 99.0),
        series([("__name__", "rigwatch_gpu_info"), *FORGED, ("name", "Forged card")]),
    )


def test_a_forged_push_lands_under_the_login_s_rig(walked, forged):
    assert forged["status"] == 204, forged
    query = "rigwatch_gpu_temperature_celsius"
    stored = wait_until(lambda: reader_query(walked, query), 30, 1, what="the push")
    assert [row["metric"]["rig"] for row in stored] == ["rig2"]


def test_a_forged_push_reaches_the_chat_only_as_the_login_s_rig(walked, telegram, forged):
    assert forged["status"] == 204, forged
    calls = delivered(walked, telegram, "GpuTemperatureCritical", {"sendMessage"})
    (message,) = [c for c in calls if c.method == "sendMessage"]
    assert "rig <b>rig2</b>" in message.params["text"], message.params["text"]
    # Nothing in the chat, nor in Alertmanager, speaks of rig1: the forged label is gone.
    texts = telegram.texts(CHAT)
    assert not [text for text in texts if "rig <b>rig1</b>" in text], texts
    answer = in_box_request(walked, "http://127.0.0.1:9093/api/v2/alerts")
    assert answer["status"] == 200, answer
    alerts = json.loads(answer["body"])
    assert "GpuTemperatureCritical" in [a["labels"]["alertname"] for a in alerts]
    assert [a for a in alerts if a["labels"].get("rig") == "rig1"] == []


def test_the_rig_login_reaches_nothing_else_and_the_reader_cannot_write(walked):
    for path in ("/api/v1/query?query=up", "/-/quit", "/api/v1/admin/tsdb/delete_series"):
        answer = in_box_request(
            walked, "http://127.0.0.1:8427" + path, "rig2", PASSWORDS["RIG2-PASSWORD"]
        )
        assert answer["status"] == 400 and "missing route" in answer["body"], (path, answer)
    walked.write("/root/empty.bin", write_request())
    answer = in_box_request(
        walked, "http://127.0.0.1:8427/api/v1/write", "rigwatch", PASSWORDS["READER-PASSWORD"],
        "/root/empty.bin",
    )  # fmt: skip
    assert answer["status"] == 400 and "missing route" in answer["body"], answer
    # Prometheus itself wants the centre's login, which no client has.
    answer = in_box_request(walked, "http://127.0.0.1:9090/api/v1/query?query=up", "rig2", "x")
    assert answer["status"] == 401, answer


def test_the_centre_s_bot_answers_on_the_loopback_only(walked):
    """A centre faces the internet: the doc's ALERT_BOT_LISTEN keeps the bot's webhook, /metrics
    and /healthz on the loopback, where Alertmanager reaches it (its bot.env overrides the
    unit's 0.0.0.0, as systemd reads them)."""
    wait_until(
        lambda: in_box_request(walked, "http://127.0.0.1:10736/healthz")["status"] == 200,
        timeout=60,
        what="the bot's /healthz on the loopback",
    )
    outside = walked.sh("hostname -I").split()[0]
    answer = in_box_request(walked, f"http://{outside}:10736/healthz")
    assert answer["status"] == 0 and "refused" in answer["body"].lower(), answer


def test_a_refused_login_at_the_door_is_named_and_counted_at_the_centre(walked):
    """The door's section as walked: a rig whose password changed on one side only is refused
    with 401, nginx's error log names it without the password, and mtail's count of it
    reaches the centre's Prometheus (job push-door, from step 2's prometheus.yml)."""
    wrong = [push(walked, password="an-old-password")["status"] for _ in range(3)]
    assert wrong == [401] * 3
    errors = walked.read("/var/log/nginx/rigwatch-push-error.log")
    assert 'user "rig2": password mismatch' in errors and "an-old-password" not in errors
    query = 'rigwatch_push_refused_total{job="push-door",user="rig2",status="401"}'
    wait_until(
        lambda: [r["value"][1] for r in reader_query(walked, query)] == ["3"], 30, 1,
        what="the door's count of 3 in Prometheus",
    )  # fmt: skip
