"""Helpers for push mode and the VictoriaMetrics centre: bcrypt users, a Prometheus that
receives remote writes behind a login, a rig's vmagent, VictoriaMetrics single-node and vmalert,
all real processes on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import yaml

from tests.stack.stack_support import PROMETHEUS_DIR, write_prometheus_overlay
from tests.support import REPO, ManagedProcess, free_port, stopped_after, wait_for_http, wait_until

RIG_AGENT_DIR = REPO / "deploy" / "rig-agent"


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash as Prometheus's and Alertmanager's web config expect ($2b$, cost 4: the
    lowest bcrypt allows, so the servers under test check each request quickly)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_web_config(path: Path, users: dict[str, str]) -> Path:
    """A --web.config.file with one bcrypt basic-auth user per (name, password)."""
    path.write_text(
        yaml.safe_dump({"basic_auth_users": {u: bcrypt_hash(p) for u, p in users.items()}})
    )
    return path


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def request(
    url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None
) -> tuple[int, str]:
    """Any HTTP request; (status, body) for every status."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def authed_query(base: str, promql: str, headers: dict) -> list[dict]:
    status, body = request(
        f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), headers=headers
    )
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", body
    return data["data"]["result"]


def firing_alerts(base: str, headers: dict, alertname: str) -> list[dict]:
    """The alerts named alertname that Prometheus (at base, with this login) has firing."""
    status, body = request(base + "/api/v1/alerts", headers=headers)
    assert status == 200, body
    return [
        a
        for a in json.loads(body)["data"]["alerts"]
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    ]


def write_push_centre_config(
    workdir: Path,
    port: int,
    alertmanager_port: int | None,
    self_user: str,
    self_password: str,
    silent_window: str = "5s",
    door: dict[str, str] | None = None,
) -> Path:
    """The test overlay of prometheus/prometheus-push.yml: 1 s intervals, short `for:`s, the
    self-scrape logging in, RigSilent's 5 minutes shortened to silent_window, and the shipped
    scrapes of vmauth and the push relay at door's addresses (job name to host:port)."""
    path = write_prometheus_overlay(workdir, port, alertmanager_port)
    config = yaml.safe_load(path.read_text())
    shipped_jobs = yaml.safe_load((PROMETHEUS_DIR / "prometheus-push.yml").read_text())
    for job in shipped_jobs["scrape_configs"]:
        if door and job["job_name"] in door:
            config["scrape_configs"].append(
                {**job, "static_configs": [{"targets": [door[job["job_name"]]]}]}
            )
    password_file = workdir / "self-password"
    password_file.write_text(self_password)
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus-push.yml").read_text())
    (shipped_self,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "prometheus"]
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            job["basic_auth"] = {**shipped_self["basic_auth"], "password_file": str(password_file)}
            job["basic_auth"]["username"] = self_user
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = workdir / "rules" / "stack.yml"
    rules = yaml.safe_load(stack.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "RigSilent":
                assert "[5m]" in rule["expr"]
                rule["expr"] = rule["expr"].replace("[5m]", f"[{silent_window}]")
    stack.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def prometheus_args(config: Path, data: Path, port: int, web_config: Path) -> list[str]:
    return [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
        f"--web.config.file={web_config}",
        "--rules.alert.resend-delay=1s",
    ]


def wait_ready_with_auth(proc: ManagedProcess, base: str, headers: dict) -> None:
    try:
        wait_until(lambda: request(base + "/-/ready", headers=headers)[0] == 200, 30, 0.2)
    except TimeoutError as exc:
        raise RuntimeError(f"prometheus did not start:\n{proc.output()}") from exc


CENTRE_PUSH_DIR = REPO / "deploy" / "centre-push"
CENTRE_USER = "centre"


def compose_command(
    service: str, replace: dict[str, str], compose_file: str = "docker-compose.push.yml"
) -> list[str]:
    """A compose file's command for service, with container paths and addresses swapped for
    the test's (replace: old substring to new), so the test runs the shipped flags."""
    services = yaml.safe_load((REPO / compose_file).read_text())["services"]
    args = []
    for arg in services[service]["command"]:
        for old, new in replace.items():
            arg = arg.replace(old, new)
        args.append(arg)
    return args


def write_vmauth_config(
    path: Path, reader: tuple[str, str], rigs: dict[str, str], prometheus: str, relay: str,
    centre_password: str, rig_of: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """deploy/centre-push/vmauth.example.yml filled in: the reader's read routes to prometheus
    (logging in as the centre), one write route per rig user (name to password) to the relay,
    writing as the rig rig_of names for the user (by default, the user's own name)."""
    example = yaml.safe_load((CENTRE_PUSH_DIR / "vmauth.example.yml").read_text())
    reader_entry, rig_entry = example["users"]
    token = base64.b64encode(f"{CENTRE_USER}:{centre_password}".encode()).decode()
    (read_route,) = reader_entry["url_map"]
    users = [
        {
            "username": reader[0],
            "password": reader[1],
            "url_map": [
                {
                    **read_route,
                    "url_prefix": read_route["url_prefix"].replace(
                        "http://prometheus:9090", prometheus
                    ),
                    "headers": [f"Authorization: Basic {token}"],
                }
            ],
        }
    ]
    (write_route,) = rig_entry["url_map"]
    for name, password in rigs.items():
        prefix = write_route["url_prefix"].replace("http://push-relay:8429", relay)
        prefix = prefix.replace("rig=rig2", f"rig={(rig_of or {}).get(name, name)}")
        route = {**write_route, "url_prefix": prefix}
        users.append({"username": name, "password": password, "url_map": [route]})
    path.write_text(yaml.safe_dump({"users": users}, sort_keys=False))
    return path


def metric_value(body: str, series: str) -> float:
    """The value of one series line in a /metrics page, 0 when absent."""
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


class PushCentre:
    """The centre as docker-compose.push.yml runs it, on loopback: vmauth in front (users:
    name to password; reader is Grafana's and the bot's login, every other user a rig), the
    push relay (vmagent with prometheus/push-relay.yml) and Prometheus with the remote-write
    receiver behind its internal login. It can be stopped and started again on the same ports
    and data. base is vmauth's address, the only one a client uses."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        reader: str,
        silent_window: str = "5s",
        engine: str = "prometheus",
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.relay_port = free_port()
        self.auth_port = free_port()
        self.prometheus = f"http://127.0.0.1:{self.port}"
        self.relay = f"http://127.0.0.1:{self.relay_port}"
        self.base = f"http://127.0.0.1:{self.auth_port}"
        self.write_url = self.base + "/api/v1/write"
        self.login = basic_auth(reader, users[reader])
        centre_password = "centre-internal-password"
        self.centre_login = basic_auth(CENTRE_USER, centre_password)
        web = write_web_config(workdir / "web.yml", {CENTRE_USER: centre_password})
        door = {
            "vmauth": f"127.0.0.1:{self.auth_port}",
            "push-relay": f"127.0.0.1:{self.relay_port}",
        }
        config = write_push_centre_config(
            workdir, self.port, None, CENTRE_USER, centre_password, silent_window, door
        )
        self.password_file = workdir / "self-password"
        self.engine = engine
        self.env: dict[str, str] = {}
        if engine == "prometheus":
            self.args = prometheus_args(config, workdir / "data", self.port, web)
        else:
            # docker-compose.vm-push.yml's VictoriaMetrics: the login from the environment.
            self.env = {"httpAuth_password": centre_password}
            self.args = [
                "victoria-metrics",
                *compose_command(
                    "prometheus",
                    {
                        ":9090": f"127.0.0.1:{self.port}",
                        "/victoria-metrics-data": str(workdir / "vm-data"),
                        "${PROMETHEUS_RETENTION:-30d}": "1d",
                        "/etc/prometheus/prometheus-push.yml": str(config),
                    },
                    "docker-compose.vm-push.yml",
                ),
                "-search.latencyOffset=0s",
            ]
        self.reader = (reader, users[reader])
        self.centre_password = centre_password
        self.auth_config = workdir / "vmauth.yml"
        self.set_users(users)
        self.relay_args = [
            "vmagent",
            *compose_command(
                "push-relay",
                {
                    ":8429": f"127.0.0.1:{self.relay_port}",
                    "http://prometheus:9090": self.prometheus,
                    "/etc/prometheus-secrets/prometheus-password": str(self.password_file),
                    "/etc/prometheus/": f"{PROMETHEUS_DIR}/",
                    "/vmagent-data": str(workdir / "relay-buffer"),
                },
            ),
            "-remoteWrite.flushInterval=200ms",
        ]
        self.auth_args = [
            "vmauth",
            *compose_command(
                "vmauth",
                {":8427": f"127.0.0.1:{self.auth_port}", "/etc/vmauth/": f"{workdir}/"},
            ),
        ]
        self.proc: ManagedProcess | None = None
        self.relay_proc: ManagedProcess | None = None
        self.auth_proc: ManagedProcess | None = None

    def set_users(self, users: dict[str, str], rig_of: dict[str, str] | None = None) -> None:
        """Write vmauth's users (the reader stays); a running vmauth reads them on SIGHUP."""
        rigs = {name: password for name, password in users.items() if name != self.reader[0]}
        write_vmauth_config(
            self.auth_config, self.reader, rigs, self.prometheus, self.relay,
            self.centre_password, rig_of,
        )  # fmt: skip

    def reload_users(self, users: dict[str, str], rig_of: dict[str, str] | None = None) -> None:
        """New users for the running vmauth, by SIGHUP as the docs say; waits until read."""
        assert self.auth_proc is not None
        done = self.auth_proc.output().count("Successfully reloaded")
        self.set_users(users, rig_of)
        self.auth_proc.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: self.auth_proc.output().count("Successfully reloaded") > done,
            10,
            what="vmauth's reload",
        )

    def start(self) -> None:
        self.proc = ManagedProcess(self.args, env=self.env)
        if self.engine == "prometheus":
            wait_ready_with_auth(self.proc, self.prometheus, self.centre_login)
        else:
            wait_for_http(self.prometheus + "/health", timeout=30)
        self.relay_proc = ManagedProcess(self.relay_args)
        self.auth_proc = ManagedProcess(self.auth_args, env=VMAUTH_KEYS)
        for proc, url in ((self.relay_proc, self.relay), (self.auth_proc, self.base)):
            try:
                wait_for_http(url + "/health", timeout=20)
            except TimeoutError as exc:
                raise RuntimeError(f"{proc.args[0]} did not start:\n{proc.output()}") from exc

    def stop(self) -> None:
        for name in ("auth_proc", "relay_proc", "proc"):
            proc = getattr(self, name)
            if proc is not None:
                proc.stop(timeout=30)
                setattr(self, name, None)

    def query(self, promql: str) -> list[dict]:
        return authed_query(self.base, promql, self.login)


# vmauth's own endpoints other than the proxy (/-/reload, /flags, /debug/pprof) answer only
# with these keys; docker-compose.push.yml draws them at random on each start, so no one
# knows them and the configuration is reloaded by SIGHUP. /metrics stays open to the
# centre's scrape (it names users, never passwords).
VMAUTH_KEYS = {
    "reloadAuthKey": "test-reload-key-nobody-knows",
    "flagsAuthKey": "test-flags-key-nobody-knows",
    "pprofAuthKey": "test-pprof-key-nobody-knows",
}


# --- vmagent on a rig ------------------------------------------------------------------------


def write_agent_scrape_config(workdir: Path, interval: str = "1s") -> Path:
    """deploy/rig-agent/scrape.yml with the test's scrape interval; the labels stay shipped."""
    config = yaml.safe_load((RIG_AGENT_DIR / "scrape.yml").read_text())
    config["global"].update({"scrape_interval": interval, "scrape_timeout": interval})
    path = workdir / "scrape.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Agent:
    """A rig's vmagent: scrapes one exporter, pushes to the centre, buffers in workdir."""

    def __init__(
        self, workdir: Path, rig: str, exporter: str, remote_url: str, user: str, password: str
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.rig = rig
        self.exporter = exporter
        self.remote_url = remote_url
        self.user = user
        self.password_file = workdir / "push-password"
        self.password_file.write_text(password)
        self.scrape_config = write_agent_scrape_config(workdir)
        self.port = free_port()
        self.proc: ManagedProcess | None = None

    @property
    def args(self) -> list[str]:
        return [
            "vmagent",
            f"-promscrape.config={self.scrape_config}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-remoteWrite.url={self.remote_url}",
            f"-remoteWrite.basicAuth.username={self.user}",
            f"-remoteWrite.basicAuth.passwordFile={self.password_file}",
            f"-remoteWrite.tmpDataPath={self.workdir / 'buffer'}",
            "-remoteWrite.maxDiskUsagePerURL=1GiB",
            "-remoteWrite.rateLimit=1048576",
            "-remoteWrite.queues=1",
            "-remoteWrite.flushInterval=500ms",
            "-loggerLevel=WARN",
        ]

    def start(self) -> None:
        env = {"RIGWATCH_RIG": self.rig, "RIGWATCH_EXPORTER": self.exporter}
        self.proc = ManagedProcess(self.args, env=env)
        try:
            wait_for_http(f"http://127.0.0.1:{self.port}/health", timeout=20)
        except TimeoutError as exc:
            output = self.proc.output()
            self.stop()  # `with` never reaches __exit__ when __enter__ fails
            raise RuntimeError(f"vmagent did not start:\n{output}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- VictoriaMetrics single-node and vmalert -------------------------------------------------

# An alert's link as Prometheus makes it (graph?g0.expr=...), which the alert bot reads to draw
# the alert's chart; docker-compose.vm.yml passes the same.
VMALERT_SOURCE_FLAGS = (
    "-external.url=http://localhost:9090",
    "-external.alert.source=graph?g0.expr={{$expr|queryEscape}}",
)


@contextlib.contextmanager
def running_victoria_metrics(workdir: Path, scrape_config: Path | None = None) -> Iterator[str]:
    """Debian's victoria-metrics single node on loopback (scraping scrape_config if given)."""
    port = free_port()
    args = [
        "victoria-metrics",
        f"-storageDataPath={workdir / 'vm-data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=1d",
        # Answer queries with samples up to now, as Prometheus does, not 30 s behind.
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]
    if scrape_config is not None:
        # prometheus.yml also holds what is vmalert's job (rule_files, alerting) and a
        # file_sd refresh_interval VM does not know (it re-reads every 30 s): skip those.
        args += [f"-promscrape.config={scrape_config}", "-promscrape.config.strictParse=false"]
    proc = ManagedProcess(args)
    base = f"http://127.0.0.1:{port}"
    with stopped_after(proc, base + "/health", "victoria-metrics"):
        yield base


@contextlib.contextmanager
def running_vmalert(
    rule_files: list[Path], datasource: str, notifier: str | None = None, interval: str = "1s"
) -> Iterator[tuple[ManagedProcess, str]]:
    """Debian's vmalert evaluating rule_files against datasource, writing recorded series
    and ALERTS back to it."""
    port = free_port()
    args = [
        "vmalert",
        *(f"-rule={path}" for path in rule_files),
        f"-datasource.url={datasource}",
        f"-remoteWrite.url={datasource}",
        f"-remoteRead.url={datasource}",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-evaluationInterval={interval}",
        *VMALERT_SOURCE_FLAGS,
        "-loggerLevel=WARN",
    ]
    # vmalert needs a notifier; where the test does not look at notifications, a closed port.
    args.append(f"-notifier.url={notifier or 'http://127.0.0.1:9'}")
    proc = ManagedProcess(args)
    base = f"http://127.0.0.1:{port}"
    with stopped_after(proc, base + "/health", "vmalert"):
        yield proc, base
