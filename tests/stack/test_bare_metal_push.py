"""docs/push.md's centre without Docker, walked in one clean Debian container of the private
engine (the python stand-in image: Debian bookworm, nothing of rigwatch): Debian's prometheus
and victoria-metrics packages, the doc's centre block as written (Prometheus's flags and login,
the push relay's and vmauth's units), then the doc's rig block, a rig's vmagent pushing through
vmauth with its own unit. The pushed rig's alert fires at the centre, a forged push lands under
the login's rig, and the rig's login reaches nothing but the write path. Services start as
their unit files say (test_bare_metal.Box.start_unit); the container has no systemd."""

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
from tests.stack.remote_write import REMOTE_WRITE_HEADERS, series, write_request
from tests.stack.test_bare_metal import Box, clean_box
from tests.stack.test_compose_up import REQUIRED
from tests.support import REPO, wait_until

CONTAINER = "rigwatch-bare-metal-push"
CENTRE_SECTION = "### Without Docker (Debian packages)"
RIG_SECTION = "## The rig"
PASSWORDS = {"CENTRE-PASSWORD": "centre-walk-pw", "READER-PASSWORD": "reader-walk-pw",
             "RIG2-PASSWORD": "rig2-walk-pw"}  # fmt: skip


def log(message: str) -> None:
    print(f"[bare-metal push {time.strftime('%H:%M:%S')}] {message}", flush=True)


def section_blocks(heading: str) -> list[str]:
    """The fenced blocks of one section of docs/push.md (up to the next heading)."""
    text = (REPO / "docs" / "push.md").read_text()
    section = text[text.index(heading) + len(heading) :]
    section = section[: re.search(r"\n##+ ", section).start()]  # a block's "# " is no heading
    return re.findall(r"```\w*\n(.*?)```", section, re.DOTALL)


def run_block(box: Box, block: str, workdir: str) -> list[str]:
    """A doc block as a script; its `systemctl enable --now` / `restart` lines are returned as
    the units to start (the container has no systemd), in order."""
    units, script = [], []
    for line in block.splitlines():
        systemctl = re.fullmatch(r"systemctl (?:enable --now|restart) (.+)", line.strip())
        if systemctl:
            units += systemctl.group(1).split()
        else:
            script.append(line)
    text = "\n".join(script)
    for placeholder, password in PASSWORDS.items():
        text = text.replace(placeholder, password)
    box.sh(text, timeout=300, workdir=workdir)
    return units


def unit_path(box: Box, unit: str) -> str:
    for directory in ("/etc/systemd/system", "/lib/systemd/system"):
        path = f"{directory}/{unit}.service"
        if box.sh(f"test -e {path} && echo yes || echo no").strip() == "yes":
            return path
    raise AssertionError(f"no unit file for {unit}")


def in_box_request(box: Box, url: str, user: str, password: str, body_file: str = "") -> dict:
    """An HTTP request made inside the container (the services listen on its loopback):
    status and body."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
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


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> Iterator[Box]:
    started = time.monotonic()
    with engine.engine_with_stand_ins("bare-metal push test", log, REQUIRED) as docker:
        try:
            yield _walk(docker, tmp_path_factory.mktemp("bare-metal-push"), started)
        finally:
            log(f"done after {time.monotonic() - started:.0f} s")


def _walk(docker: engine.Engine, tmp: Path, started: float) -> Box:
    # What the doc asks for first: Debian's packages.
    packages = ["prometheus", "victoria-metrics", "apache2-utils"]
    box = clean_box(docker, tmp, CONTAINER, packages, [])
    log(f"packages installed after {time.monotonic() - started:.0f} s")
    (centre_block,) = section_blocks(CENTRE_SECTION)
    units = run_block(box, centre_block, "/root/rigwatch")
    assert units == ["prometheus", "rigwatch-push-relay", "rigwatch-vmauth"], units
    # The walk's only changes to what the doc installed: 2 s intervals and a short `for` on
    # ExporterDown, so the pushed rig's alert comes within the test's patience.
    config = yaml.safe_load(box.read("/etc/prometheus/prometheus.yml"))
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
    box.write("/etc/prometheus/prometheus.yml", yaml.safe_dump(config, sort_keys=False))
    box.sh(
        "sed -i '/alert: ExporterDown/,/for:/ s/for: 2m/for: 2s/' /etc/prometheus/rules/stack.yml"
    )
    for unit in units:
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

    # The rig, on the same box: the doc's rig block, pointed at the centre's door. No
    # exporter runs here, so the agent pushes up=0 for rig2: ExporterDown, from a pushed rig.
    (rig_block,) = [b for b in section_blocks(RIG_SECTION) if "rigwatch-vmagent" in b]
    rig_units = run_block(box, rig_block, "/root/rigwatch")
    assert rig_units == ["rigwatch-vmagent"]
    box.sh(
        "sed -i 's#^RIGWATCH_CENTRE_URL=.*#RIGWATCH_CENTRE_URL=http://127.0.0.1:8427/api/v1/write#'"
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


def test_the_pushed_rig_arrives_under_its_login_and_its_alert_fires(walked):
    try:
        (up,) = wait_until(lambda: reader_query(walked, 'up{rig="rig2"}'), 90, 1, what="rig2")
    except TimeoutError:
        raise AssertionError(walked.log_tail("rigwatch-vmagent")) from None
    assert up["metric"]["job"] == "rigwatch" and up["value"][1] == "0"
    alert = 'ALERTS{alertname="ExporterDown",alertstate="firing",rig="rig2"}'
    (firing,) = wait_until(lambda: reader_query(walked, alert), 90, 1, what="ExporterDown")
    assert firing["metric"]["instance"] == "rig2"  # the pushed rig's, not a scraped target


def test_a_forged_push_lands_under_the_login_s_rig(walked):
    forged = series([("__name__", "walk_forged"), ("job", "rigwatch"), ("rig", "rig1"),
                     ("instance", "rig1")])  # fmt: skip
    walked.write("/root/forged.bin", write_request(forged))
    answer = in_box_request(
        walked, "http://127.0.0.1:8427/api/v1/write", "rig2", PASSWORDS["RIG2-PASSWORD"],
        "/root/forged.bin",
    )  # fmt: skip
    assert answer["status"] == 204, answer
    stored = wait_until(lambda: reader_query(walked, "walk_forged"), 30, 1, what="the push")
    assert [row["metric"]["rig"] for row in stored] == ["rig2"]


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
