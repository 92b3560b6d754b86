"""Benchmark rigwatch's two HTTP servers under hostile load, on loopback: scrape and webhook
latency at 100 parallel clients, the same with 1,000 idle connections held open, the server's
threads, descriptors and RSS at peak, how long it takes to answer again once they close, and
the latency beside 64 connections sending header blocks that never end (66 lines of 1,000
bytes, no blank line), each reopened as soon as the server closes it. Beside rigwatch's
exporter (h11 under rigwatch's loop) the same collectors run as a WSGI app under waitress
(bench/waitress_exporter.py), the other well-kept fit, and a second table sets the two side by
side with their ratio.

    python3 bench/bench_hostile.py [--repo PATH] [--clients 100] [--idle 1000]
                                   [--header-floods 64] [--skip-waitress]

--repo runs another checkout's exporter and bot (e.g. an older commit in a git worktree) with
this script's load, so two versions compare under the same client. Both servers run as real
processes with the open-file limit systemd gives by default (1,024). The exporter runs with
its host collectors only (no NVML needed); the bot's Telegram is the tests' fake server.
Each client request opens a new connection (the worst case for accept and the listen
backlog); every request has a 10 s timeout and counts as an error past it. Half the idle
connections send nothing, half send one request line and stop. waitress runs from
bench/.venv-waitress (git-ignored), made on first use from PyPI with waitress and the
exporter's own dependencies, then reused. Markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchkit import REPO  # bench/ is sys.path[0] when run as a script

from tests.alert_bot.fake_telegram import FakeTelegram
from tests.hostile_http import HeaderFlood
from tests.support import InBackground

WAITRESS_VENV = REPO / "bench" / ".venv-waitress"
WAITRESS_REQUIREMENT = "waitress==3.0.2"
TOKEN = "123456789:BENCH-secret-token"
WEBHOOK_TOKEN = "bench-webhook-token"
REQUEST_TIMEOUT = 10.0
SERVER_NOFILE = 1024  # systemd's default soft limit


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))


def start(
    args: list[str], repo: Path, env: dict[str, str], log_path: Path, python: str = sys.executable
) -> subprocess.Popen:
    full_env = dict(os.environ, PYTHONPATH=str(repo), **env)
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [python, *args],
            cwd=repo,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_files,
        )


def request(port: int, raw: bytes) -> tuple[float, int]:
    """One request on a new connection: (seconds to the whole answer, its status code; 0 when
    there was none: refused, reset or timed out)."""
    started = time.monotonic()
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
            sock.sendall(raw)
            while chunk := sock.recv(65536):
                data += chunk
                if time.monotonic() - started > REQUEST_TIMEOUT:
                    break
    except OSError:
        return time.monotonic() - started, 0
    took = time.monotonic() - started
    status = data[9:12] if data.startswith(b"HTTP/1.1 ") else b""
    return took, int(status) if status.isdigit() else 0


def scrape_request(_: int) -> bytes:
    return b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def webhook_request(n: int) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "BenchAlert", "severity": "warning", "rig": f"rig{n}"},
        "annotations": {"summary": "bench"},
        "startsAt": "2026-11-22T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"{n:016x}",
    }
    body = json.dumps(
        {
            "version": "4",
            "receiver": "telegram",
            "status": "firing",
            "groupKey": f"bench-{n}-{time.monotonic_ns()}",
            "truncatedAlerts": 0,
            "groupLabels": {"alertname": "BenchAlert"},
            "commonLabels": alert["labels"],
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [alert],
        }
    ).encode()
    return (
        b"POST /alertmanager HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        + f"Authorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def parallel(port: int, make, clients: int, per_client: int) -> dict:
    def client(c: int) -> list[tuple[float, int]]:
        return [request(port, make(c * per_client + i)) for i in range(per_client)]

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    times = sorted(t for t, _ in results)
    return {
        "p50": statistics.median(times),
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
        "errors": sum(1 for _, status in results if status != 200),
        "busy": sum(1 for _, status in results if status == 503),
        "n": len(results),
    }


class Sampler(InBackground):
    """Peak threads, descriptors and RSS of one process, sampled every 0.1 s."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = {"threads": 0, "fds": 0, "rss_mb": 0.0}
        self._stopped = threading.Event()

    def read(self) -> dict:
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {
            "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        }

    def run(self) -> None:
        while not self._stopped.wait(0.1):
            try:
                now = self.read()
            except (OSError, KeyError, ValueError):
                continue
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)

    def stop(self) -> None:
        self._stopped.set()


def open_idle(port: int, count: int, first_line: bytes) -> list[socket.socket]:
    sockets = []
    for n in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 2:
                sock.sendall(first_line)
        except OSError:
            continue
        sockets.append(sock)
    return sockets


def recovery(port: int, make, cap: float = 60.0) -> float:
    """Seconds from now until one request is answered 200 within a second."""
    started = time.monotonic()
    while time.monotonic() - started < cap:
        took, status = request(port, make(0))
        if status == 200 and took < 1.0:
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


def wait_healthy(port: int, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-2000:])
        _, status = request(port, b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError("server did not start:\n" + log_path.read_text()[-2000:])


def measure(name: str, port: int, proc: subprocess.Popen, make, first_line: bytes, args) -> dict:
    parallel(port, make, 10, 2)  # warm up
    log(f"{name}: {args.clients} parallel clients")
    calm = parallel(port, make, args.clients, 5)
    sampler = Sampler(proc.pid)
    with sampler:
        log(f"{name}: {args.idle} idle connections, then {args.clients} parallel clients")
        idle = open_idle(port, args.idle, first_line)
        time.sleep(1.0)
        flooded = parallel(port, make, args.clients, 2)
        time.sleep(0.5)
        for sock in idle:
            sock.close()
        log(f"{name}: closed them; waiting for a prompt answer")
        recovered = recovery(port, make)
    log(f"{name}: {args.header_floods} never-ending header blocks beside {args.clients} clients")
    with HeaderFlood(port, args.header_floods, first_line) as flood:
        time.sleep(1.0)
        headers = parallel(port, make, args.clients, 2)
    log(f"{name}: {flood.opened} header-block connections opened")
    lines = proc_log_lines(proc)
    return {
        "calm": calm,
        "flooded": flooded,
        "headers": headers,
        "idle_open": len(idle),
        "peak": sampler.peak,
        "recovery": recovered,
        "log_lines": lines,
    }


_LOGS: dict[int, Path] = {}


def proc_log_lines(proc: subprocess.Popen) -> int:
    path = _LOGS.get(proc.pid)
    return len(path.read_text(errors="replace").splitlines()) if path else 0


HOST_ONLY = [
    "--no-collector.gpu",
    "--no-collector.gpu_process",
    "--no-collector.xid",
    "--no-collector.gpm",
]


def run_exporter(
    name: str, repo: Path, workdir: Path, args, program: list[str], python: str = sys.executable
) -> dict:
    """One exporter process (its host collectors only) under the whole load."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    proc = start([*program(port), *HOST_ONLY], repo, {}, log_path, python)
    _LOGS[proc.pid] = log_path
    try:
        wait_healthy(port, proc, log_path)
        return measure(name, port, proc, scrape_request, b"GET /metrics HTTP/1.1\r\n", args)
    finally:
        proc.terminate()
        proc.wait(10)


def rigwatch_exporter(port: int) -> list[str]:
    return ["-m", "exporter", f"--web.listen-address=127.0.0.1:{port}"]


def waitress_exporter(port: int) -> list[str]:
    return [str(REPO / "bench" / "waitress_exporter.py"), f"--port={port}"]


def ensure_waitress_venv() -> str:
    """bench/.venv-waitress's python, with waitress and the exporter's dependencies (read from
    pyproject.toml), made on first use and reused afterwards."""
    python = WAITRESS_VENV / "bin" / "python"
    if python.exists():
        return str(python)
    import tomllib

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    log(f"creating {WAITRESS_VENV.relative_to(REPO)} with {WAITRESS_REQUIREMENT}")
    subprocess.run([sys.executable, "-m", "venv", str(WAITRESS_VENV)], check=True, timeout=120)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", WAITRESS_REQUIREMENT, *dependencies],
        check=True,
        timeout=300,
    )
    return str(python)


def run_bot(repo: Path, workdir: Path, args) -> dict:
    port = free_port()
    log_path = workdir / "bot.log"
    with FakeTelegram(TOKEN) as telegram:
        env = {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": "1001",
            "TELEGRAM_API_URL": telegram.url,
            "ALERT_BOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "ALERT_BOT_LISTEN": f"127.0.0.1:{port}",
            "ALERT_BOT_DB": str(workdir / "bot.db"),
            "PROMETHEUS_URL": "http://127.0.0.1:9",
            "ALERTMANAGER_URL": "http://127.0.0.1:9",
            "GRAFANA_URL": "http://grafana:3000",
        }
        proc = start(["-m", "alert_bot"], repo, env, log_path)
        _LOGS[proc.pid] = log_path
        try:
            wait_healthy(port, proc, log_path)
            return measure(
                "bot", port, proc, webhook_request, b"POST /alertmanager HTTP/1.1\r\n", args
            )
        finally:
            proc.terminate()
            proc.wait(10)


def ms_pair(stats: dict) -> str:
    return f"{stats['p50'] * 1000:.0f} / {stats['p99'] * 1000:.0f} ms"


def recovery_text(seconds: float) -> str:
    return "never (60 s)" if seconds == float("inf") else f"{seconds:.2f} s"


def table(results: dict[str, dict], args) -> str:
    rows = [
        "| server | p50 / p99 at "
        f"{args.clients} clients | errors | p50 / p99 with {args.idle} idle open | errors "
        "| peak threads | peak fds | peak RSS | answers again after they close "
        f"| p50 / p99 beside {args.header_floods} never-ending header blocks | errors | 503s "
        "| log lines |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        calm, flooded, peak, headers = r["calm"], r["flooded"], r["peak"], r["headers"]
        rows.append(
            f"| {name} | {ms_pair(calm)} | {calm['errors']}/{calm['n']} "
            f"| {ms_pair(flooded)} | {flooded['errors']}/{flooded['n']} "
            f"| {peak['threads']} | {peak['fds']} | {peak['rss_mb']:.0f} MB "
            f"| {recovery_text(r['recovery'])} "
            f"| {ms_pair(headers)} | {headers['errors']}/{headers['n']} | {headers['busy']} "
            f"| {r['log_lines']} |"
        )
    rows.append("")
    opened = ", ".join(f"{name} {r['idle_open']}" for name, r in results.items())
    rows.append(
        f"{args.idle} idle connections opened: {opened}; server open-file limit "
        f"{SERVER_NOFILE}; load average {load_average()}; {os.cpu_count()} CPUs."
    )
    return "\n".join(rows)


def ratio(mine: float, peer: float) -> str:
    if mine == float("inf") or peer == float("inf"):
        return "n/a (one never answered)"
    if mine <= 0:
        return "n/a"
    return f"{peer / mine:.2f}×"


def side_by_side(mine: dict, peer: dict, args) -> str:
    """The exporter on rigwatch's h11 loop against the same collectors on waitress, row by row,
    with waitress's figure over rigwatch's."""
    lines = []

    def row(label: str, a: float, b: float, unit: str, scale: float = 1.0, digits: int = 0):
        unit = f" {unit}" if unit else ""
        lines.append(
            f"| {label} | {a * scale:.{digits}f}{unit} | {b * scale:.{digits}f}{unit} "
            f"| {ratio(a, b)} |"
        )

    def counts(label: str, a: int, b: int, n_a: int, n_b: int):
        lines.append(f"| {label} | {a}/{n_a} | {b}/{n_b} | |")

    for key, what in (
        ("calm", f"{args.clients} scrapers"),
        ("flooded", f"{args.clients} scrapers, {args.idle} idle connections open"),
        ("headers", f"{args.clients} scrapers beside {args.header_floods} header floods"),
    ):
        a, b = mine[key], peer[key]
        row(f"{what}: p50", a["p50"], b["p50"], "ms", 1000)
        row(f"{what}: p99", a["p99"], b["p99"], "ms", 1000)
        counts(f"{what}: errors (no 200 within 10 s)", a["errors"], b["errors"], a["n"], b["n"])
    a, b = mine["headers"], peer["headers"]
    counts("beside the header floods: 503 answers", a["busy"], b["busy"], a["n"], b["n"])
    row("peak threads", mine["peak"]["threads"], peer["peak"]["threads"], "")
    row("peak fds", mine["peak"]["fds"], peer["peak"]["fds"], "")
    row("peak RSS", mine["peak"]["rss_mb"], peer["peak"]["rss_mb"], "MB")
    if mine["recovery"] == float("inf") or peer["recovery"] == float("inf"):
        lines.append(
            f"| answers again after the idle ones close | {recovery_text(mine['recovery'])} "
            f"| {recovery_text(peer['recovery'])} | |"
        )
    else:
        row(
            "answers again after the idle ones close",
            mine["recovery"],
            peer["recovery"],
            "s",
            digits=2,
        )
    head = [
        "| exporter, host collectors only | rigwatch (h11) | waitress | waitress ÷ rigwatch |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + lines)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--header-floods", type=int, default=64)
    parser.add_argument(
        "--skip-waitress", action="store_true", help="no waitress peer (it needs PyPI once)"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    repo = args.repo.resolve()
    log(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="rigwatch-hostile-") as tmp:
        workdir = Path(tmp)
        results = {"exporter": run_exporter("exporter", repo, workdir, args, rigwatch_exporter)}
        if not args.skip_waitress:
            python = ensure_waitress_venv()
            results["exporter on waitress"] = run_exporter(
                "exporter on waitress", repo, workdir, args, waitress_exporter, python
            )
        results["bot"] = run_bot(repo, workdir, args)
    print(table(results, args))
    if "exporter on waitress" in results:
        print()
        print(side_by_side(results["exporter"], results["exporter on waitress"], args))


if __name__ == "__main__":
    main()
