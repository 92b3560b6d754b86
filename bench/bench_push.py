"""Push-path benchmark: what the centre spends to take N pushing rigs, written straight into
Prometheus's remote-write receiver (each rig a bcrypt user of --web.config.file, the centre
before vmauth), through vmauth and the push relay (docker-compose.push.yml's flags and
prometheus/push-relay.yml), and through the public door in front of them as the centre runs
today (nginx with TLS and deploy/centre-push/nginx-rigwatch-push.conf, mtail counting its
refusals).

One run prints one markdown table to stdout (progress goes to stderr). Every rig pushes what
one real exporter on the simulated NVML (8 cards) serves, labelled with its own rig and
instance, once per 15 s interval, each rig with its own login, the N requests spread over the
interval as independent agents would send them (each at its slot, whatever earlier answers
take). The pushers are threads of this process, sending requests as vmagent does (snappy
protobuf, one request per rig and interval, each rig keeping its connection open between
pushes, so a TLS handshake is paid once per rig, not once per push); their cost is not counted.

    python3 bench/bench_push.py                    # N = 50, 200; about 10 minutes
    python3 bench/bench_push.py --rigs 50 --window 30

Measured per path and N over the window, after one warm-up interval:
- CPU: user+system seconds of the centre's processes (with their children: nginx's worker)
  ÷ window (direct: Prometheus; proxy: Prometheus, the relay and vmauth; door: also nginx and
  mtail; each also shown alone); RSS at the end, likewise;
- samples/s: samples Prometheus appended per second (prometheus_tsdb_head_samples_appended_total);
- CPU per 1000 samples/s: the centre's CPU divided by what it took in, so a path that falls
  behind is not cheaper for it;
- push p50/p99: the time from sending a rig's request to its answer, as the rig sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import benchkit
import psutil
import yaml
from bench_fleet import INTERVAL, SnapshotServer, cpu_seconds, log, rig_names, rss_mib
from prometheus_client.parser import text_string_to_metric_families

from tests.stack.push_door import PushDoor
from tests.stack.remote_write import REMOTE_WRITE_HEADERS, series, write_request
from tests.stack.stack_support import PROMETHEUS_DIR
from tests.stack.vm_support import (
    CENTRE_USER,
    basic_auth,
    compose_command,
    prometheus_args,
    request,
    write_vmauth_config,
)
from tests.support import (
    ManagedProcess,
    build_fake_nvml,
    free_port,
    make_scenario,
    running_exporter,
    wait_for_http,
    wait_until,
    write_scenario,
)

CENTRE_PASSWORD = "bench-centre-password"
PUSH_WORKERS = 32


def rig_request(body: str, rig: str) -> bytes:
    """The WriteRequest a rig's vmagent sends for one scrape of body (job, rig, instance as
    deploy/rig-agent/scrape.yml sets them)."""
    now = int(time.time() * 1000)
    out = []
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = [("__name__", sample.name), ("job", "rigwatch"), ("rig", rig),
                      ("instance", rig), *sorted(sample.labels.items())]  # fmt: skip
            out.append(series(labels, sample.value, now))
    return write_request(*out)


class Pushers:
    """N rigs pushing one request each per interval, spread over it; records latencies. Each
    rig keeps one connection (TLS where the URL is https, trusting ca_file)."""

    def __init__(
        self, snapshot: SnapshotServer, url: str, rigs: dict[str, str], ca_file: Path | None = None
    ) -> None:
        self.snapshot = snapshot
        self.url = urllib.parse.urlsplit(url)
        self.rigs = rigs
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._connections: dict[str, http.client.HTTPConnection] = {}
        self._locks = {rig: threading.Lock() for rig in rigs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connection(self, rig: str) -> http.client.HTTPConnection:
        if rig not in self._connections:
            host, port = self.url.hostname, self.url.port
            if self.url.scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=30, context=self.context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=30)
            self._connections[rig] = conn
        return self._connections[rig]

    def _push(self, rig: str, password: str, body: str) -> None:
        data = rig_request(body, rig)
        headers = {**REMOTE_WRITE_HEADERS, **basic_auth(rig, password)}
        with self._locks[rig]:
            start = time.perf_counter()
            try:
                conn = self._connection(rig)
                conn.request("POST", self.url.path, body=data, headers=headers)
                response = conn.getresponse()
                response.read()
            except (http.client.HTTPException, OSError) as exc:
                failed = self._connections.pop(rig, None)
                if failed is not None:
                    failed.close()
                self.failures.append(f"{rig}: {exc}")
                return
            if response.status >= 300:
                self.failures.append(f"{rig}: HTTP {response.status}")
                return
            self.latencies.append(time.perf_counter() - start)

    def _run(self) -> None:
        # Each rig's push starts at its slot whatever the others' answers take, as independent
        # agents do: a slow centre shows as latency, not as less load.
        spacing = INTERVAL / len(self.rigs)
        with ThreadPoolExecutor(max_workers=PUSH_WORKERS) as pool:
            next_slot = time.monotonic()
            while not self._stop.is_set():
                body = self.snapshot.body.decode()
                for rig, password in self.rigs.items():
                    pool.submit(self._push, rig, password, body)
                    next_slot += spacing
                    if self._stop.wait(max(0.0, next_slot - time.monotonic())):
                        return

    def __enter__(self) -> Pushers:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for conn in self._connections.values():
            conn.close()


def write_bench_web_config(path: Path, users: dict[str, str]) -> Path:
    """Prometheus's web config with bcrypt cost 10, as docs/push.md makes the hashes."""
    hashes = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(10)).decode() for u, p in users.items()}
    path.write_text(yaml.safe_dump({"basic_auth_users": hashes}))
    return path


@contextlib.contextmanager
def prometheus_receiver(workdir: Path, users: dict[str, str]) -> Iterator[tuple[str, list]]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": f"{INTERVAL:g}s"}}))
    web = write_bench_web_config(workdir / "web.yml", users)
    proc = ManagedProcess(prometheus_args(config, workdir / "prom-data", port, web))
    base = f"http://127.0.0.1:{port}"
    try:
        ready = basic_auth(CENTRE_USER, CENTRE_PASSWORD)
        wait_until(lambda: request(base + "/-/ready", headers=ready)[0] == 200, 60, 0.5)
        yield base, [("Prometheus", proc)]
    finally:
        proc.stop(timeout=60)


def samples_appended(base: str) -> float:
    """Samples Prometheus has appended so far (read with the centre's login)."""
    _, text = request(base + "/metrics", headers=basic_auth(CENTRE_USER, CENTRE_PASSWORD))
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_tsdb_head_samples_appended_total")
    )


@contextlib.contextmanager
def direct(workdir: Path, rigs: dict[str, str]) -> Iterator[dict]:
    users = {CENTRE_USER: CENTRE_PASSWORD, **rigs}
    with prometheus_receiver(workdir, users) as (base, procs):
        yield {
            "url": base + "/api/v1/write",
            "procs": procs,
            "ingested": lambda: samples_appended(base),
        }


@contextlib.contextmanager
def through_vmauth(workdir: Path, rigs: dict[str, str]) -> Iterator[dict]:
    users = {CENTRE_USER: CENTRE_PASSWORD}
    relay_port, auth_port = free_port(), free_port()
    relay, door = f"http://127.0.0.1:{relay_port}", f"http://127.0.0.1:{auth_port}"
    password_file = workdir / "centre-password"
    password_file.write_text(CENTRE_PASSWORD)
    with prometheus_receiver(workdir, users) as (base, procs):
        auth_config = write_vmauth_config(
            workdir / "vmauth.yml", ("rigwatch", "reader"), rigs, base, relay, CENTRE_PASSWORD
        )
        relay_args = compose_command(
            "push-relay",
            {
                ":8429": f"127.0.0.1:{relay_port}",
                "http://prometheus:9090": base,
                "/etc/prometheus-secrets/prometheus-password": str(password_file),
                "/etc/prometheus/": f"{PROMETHEUS_DIR}/",
                "/vmagent-data": str(workdir / "relay-buffer"),
            },
        )
        auth_args = compose_command(
            "vmauth", {":8427": f"127.0.0.1:{auth_port}", "/etc/vmauth/": f"{workdir}/"}
        )
        assert auth_config.parent == workdir
        relay_proc = ManagedProcess(["vmagent", *relay_args, "-loggerLevel=WARN"])
        auth_proc = ManagedProcess(["vmauth", *auth_args, "-loggerLevel=WARN"])
        try:
            wait_for_http(relay + "/health", timeout=30)
            wait_for_http(door + "/health", timeout=30)
            yield {
                "url": door + "/api/v1/write",
                "procs": [*procs, ("relay", relay_proc), ("vmauth", auth_proc)],
                "ingested": lambda: samples_appended(base),
            }
        finally:
            auth_proc.stop(timeout=30)
            relay_proc.stop(timeout=60)


@contextlib.contextmanager
def through_door(workdir: Path, rigs: dict[str, str]) -> Iterator[dict]:
    with through_vmauth(workdir, rigs) as behind:
        door = PushDoor(workdir / "door", rigs, behind["url"].removesuffix("/api/v1/write"))
        try:
            door.start()
            assert door.proc is not None and door.mtail is not None
            yield {
                **behind,
                "url": door.write_url,
                "ca_file": door.cert,
                "procs": [*behind["procs"], ("nginx", door.proc), ("mtail", door.mtail)],
            }
        finally:
            door.stop()


PATHS = (
    ("direct (before)", direct),
    ("vmauth + relay", through_vmauth),
    ("door + vmauth + relay (now)", through_door),
)
PARTS = ("Prometheus", "relay", "vmauth", "nginx", "mtail")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (nginx's master and worker)."""
    children = psutil.Process(pid).children(recursive=True)
    return cpu_seconds(pid) + sum(cpu_seconds(child.pid) for child in children)


def tree_rss_mib(pid: int) -> float:
    children = psutil.Process(pid).children(recursive=True)
    return rss_mib(pid) + sum(rss_mib(child.pid) for child in children)


def measure(setup: dict, snapshot: SnapshotServer, rigs: dict[str, str], window: float) -> dict:
    with Pushers(snapshot, setup["url"], rigs, setup.get("ca_file")) as pushers:
        time.sleep(INTERVAL)  # warm-up: every rig has pushed once
        pushers.latencies.clear()
        procs = setup["procs"]
        cpu0 = {name: tree_cpu_seconds(p.pid) for name, p in procs}
        ingested0, start = setup["ingested"](), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - start
        cpu = {name: (tree_cpu_seconds(p.pid) - cpu0[name]) / elapsed for name, p in procs}
        rss = {name: tree_rss_mib(p.pid) for name, p in procs}
        rate = (setup["ingested"]() - ingested0) / elapsed
        latencies = list(pushers.latencies)
    if pushers.failures:
        raise RuntimeError(f"{len(pushers.failures)} pushes failed: {pushers.failures[:3]}")
    return {"cpu": cpu, "rss": rss, "rate": rate, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rigs", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    build_fake_nvml()
    workdir = Path(tempfile.mkdtemp(prefix="rigwatch-bench-push-"))
    try:
        scenario = workdir / "scenario.json"
        write_scenario(scenario, make_scenario(8))
        rows = []
        with running_exporter(scenario) as (_, exporter), SnapshotServer(exporter) as snapshot:
            for n in args.rigs:
                rigs = {rig: f"{rig}-password" for rig in rig_names(n)}
                for name, setup in PATHS:
                    log(f"{n} rigs, {name}")
                    run_dir = workdir / f"{n}-{name.split()[0]}"
                    run_dir.mkdir()
                    with setup(run_dir, rigs) as running:
                        rows.append((n, name, measure(running, snapshot, rigs, args.window)))
                    shutil.rmtree(run_dir, ignore_errors=True)
        print_table(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(rows: list[tuple[int, str, dict]]) -> None:
    names = " / ".join(PARTS)
    print(
        f"| rigs | path | CPU (cores) | of which {names} | RSS MiB ({names}) | samples/s "
        "| CPU per 1000 samples/s | push p50 / p99 ms | CPU per sample vs direct |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    direct_cost: dict[int, float] = {}
    for n, name, m in rows:
        total = sum(m["cpu"].values())
        cost = total / m["rate"] * 1000
        direct_cost.setdefault(n, cost)
        parts = " / ".join(f"{m['cpu'][k]:.3f}" if k in m["cpu"] else "-" for k in PARTS)
        rss = " / ".join(f"{m['rss'][k]:.0f}" if k in m["rss"] else "-" for k in PARTS)
        lat = m["latencies"]
        p50 = benchkit.percentile(lat, 0.5) * 1000
        p99 = benchkit.percentile(lat, 0.99) * 1000
        print(
            f"| {n} | {name} | {total:.3f} | {parts} | {sum(m['rss'].values()):.0f} ({rss}) "
            f"| {m['rate']:.0f} | {cost:.4f} | {p50:.1f} / {p99:.1f} "
            f"| {cost / direct_cost[n]:.2f}x |"
        )


if __name__ == "__main__":
    sys.exit(main())
