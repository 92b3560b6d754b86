"""The push centre's public door as deploy/centre-push/nginx-rigwatch-push.conf ships it:
Debian's nginx on loopback with TLS (a certificate made for 127.0.0.1), the rigs' logins in an
htpasswd file as docs/push.md makes it (`openssl passwd -6`), in front of a PushCentre's
vmauth, with mtail counting its refusals per user; and a rig's vmagent that trusts that
certificate."""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from tests.stack.remote_write import REMOTE_WRITE_HEADERS
from tests.stack.vm_support import Agent
from tests.support import REPO, ManagedProcess, free_port, http_get, wait_for_http, wait_until

NGINX_CONF = REPO / "deploy" / "centre-push" / "nginx-rigwatch-push.conf"
MTAIL_PROGRAM = REPO / "deploy" / "centre-push" / "rigwatch-push-door.mtail"


def post_write(url: str, context: ssl.SSLContext, headers: dict, body: bytes) -> int:
    """One remote write POSTed to a door over TLS; its status."""
    req = urllib.request.Request(
        url, data=body, headers={**REMOTE_WRITE_HEADERS, **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def htpasswd_line(user: str, password: str) -> str:
    """One user of the door's password file, hashed as docs/push.md says (SHA-512 crypt)."""
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{user}:{hashed}\n"


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), valid one day."""
    cert, key = workdir / "fullchain.pem", workdir / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return cert, key


class PushDoor:
    """nginx with the shipped server blocks, the public one on a free port with TLS, the
    limiting one on another loopback port, proxying to vmauth at auth_base."""

    def __init__(self, workdir: Path, users: dict[str, str], auth_base: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.inner_port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        self.write_url = self.base + "/api/v1/write"
        self.cert, key = make_certificate(workdir)
        self.users = workdir / "push-users"
        self.users.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
        self.access_log = workdir / "rigwatch-push.log"
        self.error_log = workdir / "rigwatch-push-error.log"
        site = NGINX_CONF.read_text()
        for shipped, here in (
            ("listen [::]:443 ssl;\n", ""),
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
            ("127.0.0.1:8426", f"127.0.0.1:{self.inner_port}"),
            ("http://127.0.0.1:8427", auth_base),
            ("/etc/rigwatch/tls/fullchain.pem", str(self.cert)),
            ("/etc/rigwatch/tls/privkey.pem", str(key)),
            ("/etc/rigwatch/push-users", str(self.users)),
            ("/var/log/nginx/rigwatch-push.log", str(self.access_log)),
            ("/var/log/nginx/rigwatch-push-error.log", str(self.error_log)),
        ):
            assert shipped in site, shipped
            site = site.replace(shipped, here)
        (workdir / "rigwatch-push.conf").write_text(site)
        # What Debian's /etc/nginx/nginx.conf provides around conf.d/*.conf, in the workdir.
        (workdir / "nginx.conf").write_text(
            f"""daemon off;
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/main-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/rigwatch-push.conf;
}}
"""
        )
        self.proc: ManagedProcess | None = None
        self.mtail_port = free_port()
        self.mtail: ManagedProcess | None = None

    def start(self) -> None:
        conf = self.workdir / "nginx.conf"
        check = subprocess.run(
            ["nginx", "-t", "-p", str(self.workdir), "-c", str(conf)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        self.proc = ManagedProcess(["nginx", "-p", str(self.workdir), "-c", str(conf)])
        try:
            wait_until(self._listening, 20, what="nginx's start")
            # Debian's mtail as its unit runs it (/etc/default/mtail: LOGS, HOST, EXTRA_ARGS
            # as docs/push.md sets them), on the access log nginx has just opened.
            self.mtail = ManagedProcess(
                ["mtail", "--progs", str(MTAIL_PROGRAM), "--logtostderr",
                 "--address", "127.0.0.1", "--port", str(self.mtail_port),
                 "--logs", str(self.access_log), "--emit_prog_label=false",
                 # docs/push.md collects every 5 minutes; here every second, for the test.
                 "--expired_metrics_gc_interval=1s"]
            )  # fmt: skip
            wait_for_http(f"http://127.0.0.1:{self.mtail_port}/metrics", timeout=20)
        except BaseException:
            # `with` never reaches __exit__ when __enter__ fails: nothing is left running.
            self.stop()
            raise

    def refusals(self) -> dict[tuple[str, str], float]:
        """mtail's counts of refusals by (user, status)."""
        body = http_get(f"http://127.0.0.1:{self.mtail_port}/metrics")[1]
        return {
            (sample.labels["user"], sample.labels["status"]): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == "rigwatch_push_refused_total"
        }

    def refused(self, user: str, status: int) -> float:
        """mtail's count of this user's refusals with this status."""
        return self.refusals().get((user, str(status)), 0.0)

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def stop(self) -> None:
        for name in ("mtail", "proc"):
            proc = getattr(self, name)
            if proc is not None:
                proc.stop(timeout=30)
                setattr(self, name, None)

    def log_lines(self, status: int, user: str) -> list[str]:
        """The access log's lines with this status for this user."""
        if not self.access_log.exists():
            return []
        wanted = (f'user="{user}"', f"status={status} ")
        return [
            ln for ln in self.access_log.read_text().splitlines() if all(w in ln for w in wanted)
        ]

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def __enter__(self) -> PushDoor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Door(Protocol):
    """What a rig's agent knows of a door: where to push, and the certificate to trust."""

    write_url: str
    cert: Path


class TlsAgent(Agent):
    """A rig's vmagent pushing through the door: it trusts the door's certificate."""

    def __init__(self, workdir: Path, rig: str, exporter: str, door: Door, password: str):
        super().__init__(workdir, rig, exporter, door.write_url, rig, password)
        self.ca_file = door.cert

    @property
    def args(self) -> list[str]:
        return [*super().args, f"-remoteWrite.tlsCAFile={self.ca_file}"]


class Flood:
    """Threads pushing with one rig's login as fast as they can, until stopped; counts the
    statuses they get."""

    def __init__(self, door: Door, login: dict, body: bytes, threads: int = 4) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        context = ssl.create_default_context(cafile=str(door.cert))
        self._threads = [
            threading.Thread(target=self._run, args=(door, context, login, body), daemon=True)
            for _ in range(threads)
        ]

    def _run(self, door: Door, context: ssl.SSLContext, login: dict, body: bytes) -> None:
        while not self._stop.is_set():
            status = post_write(door.write_url, context, login, body)
            with self._lock:
                self.statuses[status] += 1

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
