"""Benchmark rigwatch's alert bot: webhook ingest, delivery latency, a 500-alert storm against a
naive one-message-per-alert relay, and memory.

One run prints one markdown table to stdout (progress goes to stderr). The bot runs as a real
process (`python -m alert_bot`) with its SQLite queue in a temporary directory, against the
fake Telegram Bot API server from the tests (tests/alert_bot/fake_telegram.py), which enforces
Telegram-like flood limits: 3 messages per 3 s per chat, 20 per minute per group, 30 per second
overall, answering 429 with retry_after beyond them.

    python3 bench/bench_alert_bot.py [--ingest N] [--naive-cap SECONDS] [--runs-only]

Measured:
- ingest: N notifications POSTed by 4 client threads over kept-alive connections; each answer
  comes only after the SQLite commit (WAL, synchronous=FULL). Telegram is down meanwhile, so
  delivery does not compete. Notifications/s and response time p50/p99.
- delivery latency: 100 single-alert notifications spread over 50 chats (so no flood limit
  applies), from the POST to the fake Telegram receiving the sendMessage; p50/p99.
- storm: 50 notifications x 10 alerts = 500 alerts for one private chat, POSTed at once; time
  until every alert is in a message Telegram accepted, messages sent, 429s received. The naive
  relay (an HTTP handler that sends each alert as its own message at once and sleeps
  retry_after on 429) gets the same storm against the same fake; it is stopped after
  --naive-cap seconds and its total time projected from its rate.
- RSS of the bot process (current and peak) after the storm.
- the run watch: one cycle against a real Prometheus holding 20 rigs × 8 cards × 10 runs
  (simulated exporters serving those series, scraped every second with the shipped rules):
  queries, wall time and bot CPU per cycle while every run goes on, and in a cycle where 20
  runs end (their summaries: peak memory, utilisation, energy, shared cards), and the ratio of
  a cycle to the default 30 s interval. `--runs-only` measures only this.

Speed and memory are measured only here, never in timed tests.
"""

from __future__ import annotations

import argparse
import html
import http.client
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchkit import percentile  # bench/ is sys.path[0] when run as a script

from tests.alert_bot.botkit import (
    BOT_TOKEN,
    Poster,
    alert,
    bot_env,
    bot_process,
    notification,
    storm_notifications,
)
from tests.alert_bot.fake_telegram import FakeTelegram, FloodRules
from tests.support import free_port

RIGS, CARDS, RUNS = 20, 8, 10

STORM_CHAT = 4242


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    current = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return current, peak


def delivered_markers(telegram: FakeTelegram, tag: str) -> set[str]:
    found = set()
    for text in telegram.texts(STORM_CHAT):
        found.update(re.findall(rf"{tag}-\d+-\d+ ", html.unescape(text)))
    return found


def run_storm(telegram: FakeTelegram, base: str, tag: str, cap: float) -> dict:
    bodies = storm_notifications(tag, bench_storm="1")
    started = time.monotonic()
    rate_limited_before = telegram.count_status(429)
    sent_before = len(telegram.sent(STORM_CHAT))

    def post_all(chunk: list[dict]) -> None:
        poster = Poster(base)
        for body in chunk:
            try:
                poster.post(body)
            except OSError:
                return  # the naive relay may still hold the request when the cap ends it

    threads = [
        threading.Thread(target=post_all, args=(bodies[i::5],), daemon=True) for i in range(5)
    ]
    for thread in threads:
        thread.start()
    finished = None
    while time.monotonic() - started < cap:
        if len(delivered_markers(telegram, tag)) == 500:
            finished = time.monotonic() - started
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    delivered = len(delivered_markers(telegram, tag))
    return {
        "seconds": finished,
        "elapsed": elapsed,
        "delivered": delivered,
        "messages": len(telegram.sent(STORM_CHAT)) - sent_before,
        "429s": telegram.count_status(429) - rate_limited_before,
    }


class NaiveRelay:
    """What many relays do: one sendMessage per alert, inside the webhook handler."""

    def __init__(self, telegram_url: str):
        relay = self
        self.telegram_url = telegram_url
        self.stopping = False

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for item in body["alerts"]:
                    relay.send(html.escape(item["annotations"]["summary"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def send(self, text: str) -> None:
        parts = urllib.parse.urlsplit(self.telegram_url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        query = urllib.parse.urlencode({"chat_id": STORM_CHAT, "text": text, "parse_mode": "HTML"})
        while not self.stopping:
            connection.request("POST", f"/bot{BOT_TOKEN}/sendMessage?{query}")
            response = json.loads(connection.getresponse().read())
            if response.get("ok"):
                return
            if response.get("error_code") == 429:
                time.sleep(response["parameters"]["retry_after"])
                continue
            return

    def stop(self) -> None:
        self.stopping = True
        self.server.shutdown()
        self.server.server_close()


class SimulatedExporters:
    """RIGS tiny HTTP servers, each serving one rig's GPU and process series as the exporter
    would (RUNS processes over CARDS cards; runs 8 and 9 on two cards), energy counters rising
    at 300 W; `end(rig, pid)` makes a process disappear."""

    def __init__(self) -> None:
        self.started = time.time()
        self.gone: set[tuple[int, int]] = set()
        self.servers = []
        for rig in range(RIGS):
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(rig))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    def targets(self) -> list[str]:
        return [f"127.0.0.1:{server.server_address[1]}" for server in self.servers]

    def end(self, rig: int, pid: int) -> None:
        self.gone.add((rig, pid))

    def page(self, rig: int) -> str:
        joules = 1e6 + 300 * (time.time() - self.started)
        lines = [
            "rigwatch_nvml_up 1",
            'rigwatch_scrape_collector_success{collector="gpu_process"} 1',
        ]
        for card in range(CARDS):
            ids = f'gpu="{card}",uuid="GPU-{rig:04d}-{card:04d}"'
            lines += [
                f'rigwatch_gpu_info{{{ids},name="NVIDIA GeForce RTX 4090",pci_bus_id="x"}} 1',
                f"rigwatch_gpu_utilization_ratio{{{ids}}} 0.9",
                f"rigwatch_gpu_power_watts{{{ids}}} 300",
                f"rigwatch_gpu_energy_joules_total{{{ids}}} {joules:.3f}",
            ]
        for run in range(RUNS):
            pid = 1000 + run
            if (rig, pid) in self.gone:
                continue
            for card in {run % CARDS, (run + 1) % CARDS} if run >= CARDS else {run}:
                ids = f'gpu="{card}",uuid="GPU-{rig:04d}-{card:04d}"'
                who = f'{ids},pid="{pid}",process="python3",user="ann"'
                lines += [
                    f"rigwatch_gpu_process_memory_bytes{{{who}}} 2.2e10",
                    f'rigwatch_gpu_process_start_time_seconds{{{who},run="train{run}.py",'
                    f'container=""}} {self.started - 3600:.2f}',
                ]
        return "\n".join(lines) + "\n"

    def _handler(self, rig: int):
        exporters = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = exporters.page(rig).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def bench_run_watch(tmp: Path) -> list[tuple[str, str, str]]:
    """The run watch's cost per cycle on 20 rigs × 8 cards × 10 runs (see the docstring)."""
    from alert_bot.config import load_config
    from alert_bot.runs.watch import RunWatch
    from alert_bot.service.metrics import BotMetrics
    from alert_bot.store import Store
    from alert_bot.upstream.prometheus import PrometheusClient
    from tests.alert_bot.botkit import wait_prometheus_has
    from tests.alert_bot.runkit import RULES
    from tests.servers import running_prometheus

    exporters = SimulatedExporters()
    targets = ", ".join(
        f"{{targets: ['{target}'], labels: {{rig: rig{n:02d}}}}}"
        for n, target in enumerate(exporters.targets())
    )
    config_text = (
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        f"scrape_configs:\n  - job_name: rigwatch\n    static_configs: [{targets}]\n"
    )
    rows = []
    try:
        with running_prometheus(tmp, config_text) as prometheus:
            wait_prometheus_has(prometheus, "gpu:rigwatch_energy_watts:rate1m", timeout=60)
            time.sleep(5)
            env = bot_env(tmp, "http://127.0.0.1:9", {"energy": {"price_per_kwh": 0.3}})
            config = load_config(env)
            store = Store(tmp / "runs-bench.db")
            watch = RunWatch(
                config,
                store,
                BotMetrics(lambda: (0, 0.0)),
                PrometheusClient(prometheus, timeout=30),
                lambda: None,
            )
            watch.cycle()  # the first sight of every run: recorded
            assert len(watch.table.running()) == RIGS * RUNS

            def measured() -> tuple[int, float, float]:
                queries = watch.prometheus.queries
                wall, cpu = time.perf_counter(), time.process_time()
                watch.cycle()
                return (
                    watch.prometheus.queries - queries,
                    time.perf_counter() - wall,
                    time.process_time() - cpu,
                )

            steady = [measured() for _ in range(5)]
            for rig in range(RIGS):
                exporters.end(rig, 1000 + RUNS - 1)  # a two-card run on every rig ends
            time.sleep(3)  # scraped without them
            ending = measured()
            assert len(watch.table.running()) == RIGS * (RUNS - 1), "every ended run reported"
            store.close()
    finally:
        exporters.stop()
    interval = 30.0
    steady_wall = statistics.median(s[1] for s in steady)
    steady_cpu = statistics.median(s[2] for s in steady)
    rows.append(
        (
            f"run watch cycle, {RIGS} rigs × {CARDS} cards × {RUNS} runs, nothing ends",
            f"{steady_wall * 1000:.0f} ms, {steady[0][0]} queries",
            f"bot CPU {steady_cpu * 1000:.0f} ms; "
            f"{steady_wall / interval:.2%} of the 30 s interval",
        )
    )
    rows.append(
        (
            f"run watch cycle in which {RIGS} runs end (summaries)",
            f"{ending[1] * 1000:.0f} ms, {ending[0]} queries",
            f"bot CPU {ending[2] * 1000:.0f} ms; {ending[1] / interval:.2%} of the 30 s interval",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ingest", type=int, default=2000, help="notifications for the ingest test"
    )
    parser.add_argument(
        "--naive-cap", type=float, default=60.0, help="seconds the naive relay gets"
    )
    parser.add_argument("--runs-only", action="store_true", help="only the run watch's cost")
    args = parser.parse_args()
    if args.runs_only:
        with tempfile.TemporaryDirectory(prefix="rigwatch-bench-") as tmp_dir:
            _print_table(bench_run_watch(Path(tmp_dir)))
        return 0

    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="rigwatch-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        telegram = FakeTelegram(BOT_TOKEN, FloodRules()).start()
        routes = [{"match": {"bench_chat": str(n)}, "chat_id": 5000 + n} for n in range(50)]
        routes.append({"match": {"bench_storm": "1"}, "chat_id": STORM_CHAT})
        # Production timings (the tests' short backoff would make the outage busier).
        settings = {
            "routes": routes,
            "telegram": {"long_poll_timeout": 25},
            "delivery": {"backoff_initial": "1s", "backoff_max": "60s"},
        }
        env = bot_env(tmp, telegram.url, settings, port=free_port())
        env["ALERT_BOT_LOG_LEVEL"] = "ERROR"
        try:
            with bot_process(env) as (proc, base):
                # 1. ingest, with Telegram down so delivery does not compete for the database.
                progress(f"ingest: {args.ingest} notifications...")
                telegram.go_down(3600)
                bodies = [
                    notification(alert(summary=f"ingest {n}", rig="ingest"), group_key=f"i{n}")
                    for n in range(args.ingest)
                ]
                timings: list[float] = []
                lock = threading.Lock()

                def ingest(chunk: list[dict]) -> None:
                    poster = Poster(base)
                    for body in chunk:
                        began = time.perf_counter()
                        status, _ = poster.post(body)
                        took = time.perf_counter() - began
                        assert status == 200, status
                        with lock:
                            timings.append(took)

                began = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(ingest, [bodies[i::4] for i in range(4)]))
                ingest_seconds = time.perf_counter() - began
                results.append(
                    (
                        "webhook ingest, durable commit (4 clients)",
                        f"{len(timings) / ingest_seconds:.0f} notifications/s",
                        f"p50 {percentile(timings, 0.5) * 1000:.1f} ms, "
                        f"p99 {percentile(timings, 0.99) * 1000:.1f} ms",
                    )
                )
            # A fresh bot for the delivery measurements, without the ingest backlog.
            (tmp / "bot.db").unlink()
            for suffix in ("-wal", "-shm"):
                Path(str(tmp / "bot.db") + suffix).unlink(missing_ok=True)
            telegram.down_until = 0
            with bot_process(env) as (proc, base):
                progress("delivery latency: 100 notifications over 50 chats...")
                poster = Poster(base)
                latencies = []
                for n in range(100):
                    marker = f"latency-{n}-end"
                    body = notification(
                        alert(summary=marker, rig="lat", bench_chat=str(n % 50)), group_key=marker
                    )
                    sent_at = time.time()
                    assert poster.post(body)[0] == 200
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        hits = [
                            c for c in telegram.sent(5000 + n % 50) if marker in c.params["text"]
                        ]
                        if hits:
                            latencies.append(hits[0].at - sent_at)
                            break
                        time.sleep(0.002)
                    time.sleep(0.15)
                results.append(
                    (
                        "delivery latency webhook → Telegram (not rate-limited)",
                        f"p50 {statistics.median(latencies) * 1000:.1f} ms",
                        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
                        f"{len(latencies)}/100 delivered",
                    )
                )
                progress("storm: 500 alerts into one chat (rigwatch bot)...")
                bot_storm = run_storm(telegram, base, "storm", cap=180)
                current, peak = rss_kib(proc.pid)
            results.append(
                (
                    "storm 500 alerts → 1 chat: rigwatch bot",
                    f"{bot_storm['seconds']:.1f} s to deliver all"
                    if bot_storm["seconds"]
                    else f"NOT DONE after {bot_storm['elapsed']:.0f} s",
                    f"{bot_storm['messages']} messages, {bot_storm['429s']} × 429, "
                    f"{bot_storm['delivered']}/500 alerts",
                )
            )
            progress(f"storm: naive relay (capped at {args.naive_cap:.0f} s)...")
            time.sleep(3.5)  # let the chat's flood window empty
            naive = NaiveRelay(telegram.url)
            try:
                naive_storm = run_storm(telegram, naive.url, "naive", cap=args.naive_cap)
            finally:
                naive.stop()
            if naive_storm["seconds"]:
                naive_time = f"{naive_storm['seconds']:.1f} s to deliver all"
            else:
                rate = naive_storm["delivered"] / naive_storm["elapsed"]
                projected = 500 / rate if rate else float("inf")
                naive_time = (
                    f"{naive_storm['delivered']}/500 in {naive_storm['elapsed']:.0f} s (cap); "
                    f"projected {projected:.0f} s"
                )
            results.append(
                (
                    "storm 500 alerts → 1 chat: naive relay",
                    naive_time,
                    f"{naive_storm['messages']} messages, {naive_storm['429s']} × 429",
                )
            )
            results.append(
                (
                    "bot RSS after the storm",
                    f"{current / 1024:.1f} MiB",
                    f"peak {peak / 1024:.1f} MiB",
                )
            )
        finally:
            telegram.stop()
        progress("run watch: 20 rigs × 8 cards × 10 runs...")
        results += bench_run_watch(tmp)
    _print_table(results)
    return 0


def _print_table(results: list[tuple[str, str, str]]) -> None:
    print("| measurement | result | detail |")
    print("|---|---|---|")
    for row in results:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
