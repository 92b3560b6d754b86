"""The push centre's per-rig limits and named refusals, through its public door as
deploy/centre-push/nginx-rigwatch-push.conf ships it (Debian's nginx with TLS, in front of
vmauth, the push relay and Prometheus, all real processes on loopback): a rig that floods gets
429 and its agent logs and retries it while another rig's pushes keep landing on time; a
forged login, or a rig naming another in the limits' header, spends nothing of the real rig's
budget; a refused login is logged by name, never with its password, and counted per user by
mtail, whose count invented names cannot grow without bound; an agent refused at the door
keeps its data; nginx and mtail stay within their memory bounds."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.stack.push_door import Flood, PushDoor, TlsAgent, htpasswd_line, post_write
from tests.stack.remote_write import series, write_request
from tests.stack.stack_support import remove_tree
from tests.stack.vm_support import PushCentre, basic_auth, metric_value, request
from tests.support import make_scenario, running_exporter, wait_until, write_scenario

USERS = {
    "rigwatch": "reader-password",
    "rig1": "rig1-password",
    "rig2": "rig2-password",
    "rig3": "rig3-password",
    "rig4": "rig4-password",
    "rig5": "rig5-password",
}
# rig4 is known to vmauth but not (yet) to the door. Each test whose rig pushes back to back
# has a rig of its own (rig3, rig5): its 25 pushes fit its burst of 30 whatever the tests
# before it spent and however fast the machine runs them.
RIGS = {name: password for name, password in USERS.items() if name not in ("rigwatch", "rig4")}


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("push-limits")
    (workdir / "centre").mkdir()
    centre = PushCentre(workdir / "centre", USERS, "rigwatch")
    door = PushDoor(workdir / "door", RIGS, centre.base)
    try:
        centre.start()
        door.start()
        yield centre, door
    finally:
        door.stop()
        centre.stop()
        remove_tree(workdir)


def _post(door: PushDoor, context: ssl.SSLContext, login: dict, body: bytes) -> int:
    return post_write(door.write_url, context, login, body)


def _probe(rig: str) -> bytes:
    return write_request(series([("__name__", "rigwatch_push_probe"), ("job", "rigwatch"),
                                 ("rig", rig)]))  # fmt: skip


def _agent_requests(agent: TlsAgent, status: str) -> float:
    _, body = request(f"http://127.0.0.1:{agent.port}/metrics")
    line = f'vmagent_remotewrite_requests_total{{url="1:secret-url", status_code="{status}"}}'
    return metric_value(body, line)


def _agents(
    stack: contextlib.ExitStack, tmp_path: Path, door: PushDoor, *rigs: str
) -> list[TlsAgent]:
    """One exporter (one card) and, for each rig, an agent scraping it and pushing through the
    door with the rig's own login; all stopped with the stack."""
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(1))
    _, exporter = stack.enter_context(running_exporter(scenario))
    address = exporter.removeprefix("http://")
    return [
        stack.enter_context(TlsAgent(tmp_path / rig, rig, address, door, USERS[rig]))
        for rig in rigs
    ]


def test_a_flooding_rig_gets_429_and_the_other_rig_lands_on_time(centre, tmp_path, fake_nvml_dir):
    centre, door = centre
    with contextlib.ExitStack() as stack:
        rig1, rig2 = _agents(stack, tmp_path, door, "rig1", "rig2")
        for rig in ("rig1", "rig2"):
            wait_until(lambda rig=rig: centre.query(f'up{{rig="{rig}"}}'), 30, what=rig)

        def rig2_lag() -> float:
            """Seconds since rig2's newest sample was taken, as the centre sees it now."""
            (row,) = centre.query('time() - timestamp(up{rig="rig2"})')
            return float(row["value"][1])

        lags: list[float] = []
        with Flood(door, basic_auth("rig1", RIGS["rig1"]), _probe("rig1")) as flood:
            # rig1's own agent is refused too (its budget is what the flood spends) and logs
            # it; meanwhile rig2's samples keep arriving at its 1 s scrape's pace.
            def rig1_refused_and_rig2_sampled() -> bool:
                lags.append(rig2_lag())
                return _agent_requests(rig1, "429") >= 3 and len(lags) >= 20

            wait_until(rig1_refused_and_rig2_sampled, 120, 0.25, what="rig1's agent refused")
        assert rig1.proc is not None and rig2.proc is not None
        refusals = [ln for ln in rig1.proc.output().splitlines() if ": 429;" in ln]
        assert refusals, rig1.proc.output()
        # A refused block is sent again, not dropped.
        _, metrics = request(f"http://127.0.0.1:{rig1.port}/metrics")
        assert 'vmagent_remotewrite_packets_dropped_total{url="1:secret-url"} 0\n' in metrics
        assert flood.statuses[429] > flood.statuses[204] > 0, flood.statuses
        # Nothing else: the flood is refused by the door only, never by vmauth or the relay.
        assert set(flood.statuses) == {204, 429}, flood.statuses
        # rig2 was never refused and was never late: one scrape a second, pushed every 0.5 s.
        assert _agent_requests(rig2, "429") == 0 < _agent_requests(rig2, "2XX")
        assert max(lags) < 5, lags
        refused = len(door.log_lines(429, "rig1"))
        assert refused
        # mtail counts each logged refusal under the rig's name.
        wait_until(lambda: door.refused("rig1", 429) == refused, 10, what="mtail's count")
        assert not door.log_lines(429, "rig2")
        assert door.log_lines(204, "rig2")


def test_a_forged_login_spends_nothing_of_the_real_rigs_budget(centre):
    """A flood under rig3's name with a wrong password is refused by the login check before
    any limit, so rig3's own pushes meanwhile are all taken: had the limit been keyed on the
    name the pusher claims, the forgeries would have spent rig3's rate and burst, and both
    they and rig3's pushes would get 429."""
    centre, door = centre
    context = ssl.create_default_context(cafile=str(door.cert))
    forged_password = "forged-Password-7"
    forged = basic_auth("rig3", forged_password)
    body = _probe("rig3")
    with Flood(door, forged, body) as flood:
        wait_until(lambda: sum(flood.statuses.values()) >= 100, 60, what="100 forgeries")
        real = [_post(door, context, basic_auth("rig3", RIGS["rig3"]), body) for _ in range(25)]
    assert set(flood.statuses) == {401}, flood.statuses
    assert set(real) == {204}, real
    forgeries = sum(flood.statuses.values())
    wait_until(lambda: len(door.log_lines(401, "rig3")) == forgeries, 10, what="each logged")
    wait_until(lambda: door.refused("rig3", 401) == forgeries, 10, what="mtail's count")
    assert door.refused("rig3", 429) == 0
    # The refused login is named in the error log, and its password is nowhere in the logs.
    errors = door.errors()
    assert 'user "rig3": password mismatch' in errors
    token = forged["Authorization"].split()[1]
    for log in (errors, door.access_log.read_text()):
        assert forged_password not in log and token not in log
    # An unknown user is named too.
    assert _post(door, context, basic_auth("mallory", forged_password), body) == 401
    wait_until(lambda: door.log_lines(401, "mallory"), 10, what="mallory's refusal logged")
    assert 'user "mallory" was not found' in door.errors()
    # A claimed name cannot forge a log line, nor so a count for another rig: nginx escapes it.
    forger = 'x" status=200 \nZ user="rig2" status=429 '
    assert _post(door, context, basic_auth(forger, forged_password), body) == 401
    escaped = forger.replace('"', "\\x22").replace("\n", "\\x0A")
    wait_until(lambda: door.refused(escaped, 401) == 1, 10, what="the forger's count")
    assert door.refused("rig2", 429) == 0


def test_a_rig_cannot_charge_its_pushes_to_another_rig(centre):
    """The limits' key is a header the public server sets from the checked login: a rig that
    sends that header itself, naming rig5, is still limited as itself, and rig5's pushes
    meanwhile are all taken."""
    centre, door = centre
    context = ssl.create_default_context(cafile=str(door.cert))
    spoofing = {**basic_auth("rig1", RIGS["rig1"]), "X-Rigwatch-Push-User": "rig5"}
    with Flood(door, spoofing, _probe("rig1")) as flood:
        wait_until(lambda: flood.statuses[429] >= 50, 60, what="rig1 over its limit")
        real = [_post(door, context, basic_auth("rig5", RIGS["rig5"]), _probe("rig5"))
                for _ in range(25)]  # fmt: skip
    assert set(real) == {204}, real
    assert set(flood.statuses) == {204, 429}, flood.statuses


def test_an_agent_refused_at_the_door_keeps_its_data_until_its_login_is_added(
    centre, tmp_path, fake_nvml_dir
):
    """nginx refuses an unknown login with 401, which vmagent retries (vmauth's 400 it drops):
    once the door knows the login, the samples taken while it was refused arrive."""
    centre, door = centre
    with contextlib.ExitStack() as stack:
        (agent,) = _agents(stack, tmp_path, door, "rig4")
        wait_until(lambda: _agent_requests(agent, "401") >= 2, 30, what="two refusals")
        refused_until = time.time()
        assert agent.proc is not None
        assert ": 401;" in agent.proc.output()
        wait_until(lambda: 'user "rig4" was not found' in door.errors(), 10)
        assert centre.query('up{rig="rig4"}') == []
        # The centre adds rig4 to the door's users; nginx reads the file on each login.
        with door.users.open("a") as users:
            users.write(htpasswd_line("rig4", USERS["rig4"]))
        wait_until(lambda: centre.query('up{rig="rig4"}'), 60, what="rig4's data")
        first = wait_until(
            lambda: centre.query('min_over_time(timestamp(up{rig="rig4"})[5m:1s])'), 30
        )
        assert float(first[0]["value"][1]) < refused_until
        _, metrics = request(f"http://127.0.0.1:{agent.port}/metrics")
        assert 'vmagent_remotewrite_packets_dropped_total{url="1:secret-url"} 0\n' in metrics


def test_only_the_write_path_is_public(centre):
    centre, door = centre
    context = ssl.create_default_context(cafile=str(door.cert))
    for path in ("/api/v1/query?query=up", "/-/reload", "/metrics", "/"):
        req = urllib.request.Request(door.base + path, headers=basic_auth("rig1", RIGS["rig1"]))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10, context=context)
        assert refused.value.code == 404, path


def _peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process and its children (nginx's master and worker)."""
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = 0
    for each in pids:
        status = Path(f"/proc/{each}/status").read_text()
        total += next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return total / 1024


def test_the_door_stays_within_its_memory_bound_under_a_flood_of_big_bodies(centre):
    """docs/push.md's bound: bodies up to 4 MiB, and beyond the in-memory buffer nginx spools
    a body to a file; its limit zones are 1 MiB each."""
    centre, door = centre
    assert door.proc is not None
    big = b"\0" * (4 * 1024 * 1024 - 1024)
    with Flood(door, basic_auth("rig2", RIGS["rig2"]), big, threads=8) as flood:
        wait_until(lambda: sum(flood.statuses.values()) >= 80, 120, what="80 big pushes")
    context = ssl.create_default_context(cafile=str(door.cert))
    too_big = _post(door, context, basic_auth("rig2", RIGS["rig2"]), big + b"\0" * 4096)
    assert too_big == 413
    # Past the door, the relay judged the bodies (not snappy: 400) or the limit refused them.
    assert set(flood.statuses) <= {400, 429}, flood.statuses
    peak = _peak_rss_mib(door.proc.pid)
    print(f"nginx peak RSS, master and worker: {peak:.1f} MiB")
    assert peak < 64, peak


def test_names_a_scanner_invents_do_not_grow_the_count_without_bound(centre):
    """1100 logins under as many invented names: mtail keeps at most 1000 (user, status)
    pairs (its program's limit), dropping the least recently counted at each collection."""
    centre, door = centre
    assert door.mtail is not None
    context = ssl.create_default_context(cafile=str(door.cert))
    connection = http.client.HTTPSConnection("127.0.0.1", door.port, context=context)
    try:
        for number in range(1100):
            if number % 500 == 0:  # nginx closes a connection after 1000 requests
                connection.close()
            connection.request("POST", "/api/v1/write", b"x", basic_auth(f"scanner{number}", "?"))
            response = connection.getresponse()
            response.read()
            assert response.status == 401
    finally:
        connection.close()
    wait_until(lambda: door.refused("scanner1099", 401) == 1, 20, what="the last name counted")
    wait_until(lambda: len(door.refusals()) <= 1000, 20, what="mtail's collection")
    assert door.refused("scanner0", 401) == 0  # the oldest went first
    peak = _peak_rss_mib(door.mtail.pid)
    print(f"mtail peak RSS: {peak:.1f} MiB")
    assert peak < 128, peak
