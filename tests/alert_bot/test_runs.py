"""The run watch end to end: real child processes as GPU processes on the simulated NVML, the
real exporter, a real Prometheus with the shipped rules, the bot and the fake Telegram."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

import psutil

from tests.alert_bot.botkit import CHAT, bot_env, bot_process, prometheus_has, running_bot
from tests.alert_bot.runkit import (
    SimulatedRig,
    prometheus_instant_queries,
    rig_with_prometheus,
    training_process,
    wait_past_min_duration,
    wait_watch_cycles,
    watch_deadline,
)
from tests.support import free_port, http_get, mirror_proc, wait_until

CYCLE_S = 1  # the bot's run-watch interval
MIN_DURATION_S = 3
FAST_RUNS = {"runs": {"interval": f"{CYCLE_S}s", "min_duration": f"{MIN_DURATION_S}s"}}
DEADLINE_S = watch_deadline(CYCLE_S, MIN_DURATION_S)
RUN_S = 2 * MIN_DURATION_S  # how long the run with an energy summary to check lasts at least
DOCKER_ID = "abcdef012345" + "9" * 52


def _run_messages(telegram, name: str, chat: int = CHAT) -> list[str]:
    """Each "Run ended" block about the named run, as the chat shows it (notices that wait
    together go out packed in one message)."""
    blocks = []
    for text in telegram.visible_texts(chat):
        for block in re.split(r"\n(?=🏁|▶️)", text):
            if block.startswith("🏁 Run ended") and f"· {name} " in block:
                blocks.append(block)
    return blocks


def _stored_runs(db: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT * FROM runs ORDER BY first_seen").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def _wait_recorded(db: Path, count: int) -> None:
    wait_until(
        lambda: len([r for r in _stored_runs(db) if r["status"] == "running"]) >= count,
        timeout=DEADLINE_S,
        what=f"{count} runs recorded",
    )


def _samples(prometheus: str, selector: str) -> list[tuple[float, float]]:
    """A series' (timestamp, value) samples over the last ten minutes, oldest first."""
    status, body = http_get(
        prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": f"{selector}[10m]"})
    )
    assert status == 200, body
    rows = json.loads(body)["data"]["result"]
    return sorted((float(t), float(v)) for row in rows for t, v in row["values"])


def _gone_from_prometheus(prometheus: str, pid: int) -> None:
    """Wait until Prometheus has scraped the rig without the process (its series is stale)."""
    wait_until(
        lambda: (
            not prometheus_has(
                prometheus, f'rigwatch_gpu_process_start_time_seconds{{pid="{pid}"}}'
            )
        ),
        DEADLINE_S,
        what=f"pid {pid} gone from Prometheus",
    )


def _stop(*children) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_runs_sharing_a_card_each_end_with_one_message(tmp_path, telegram):
    rig = SimulatedRig(tmp_path / "scenario.json", cards=3, watts=300)
    rig.without_counter(2)  # a Pascal card: energy integrated from power, marked estimated
    train = evaluate = None
    try:
        settings = {
            **FAST_RUNS,
            "energy": {"price_per_kwh": 0.30, "currency": "€"},
            "timezone": "Asia/Kolkata",
        }
        with rig, rig_with_prometheus(tmp_path, rig) as (_, prometheus):
            # The runs start once Prometheus scrapes, so all of their energy is in its data.
            train = training_process(tmp_path, "train.py")
            evaluate = training_process(tmp_path, "eval.py")
            rig.place(train.pid, [0, 1], memory=22 << 30)
            rig.place(evaluate.pid, [1, 2], memory=4 << 30)
            energy_before = rig.energy_joules(0) + rig.energy_joules(1)
            env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
            with running_bot(env) as (app, _):
                _wait_recorded(tmp_path / "bot.db", 2)
                # Long enough that its energy stands out from a scrape's worth.
                wait_past_min_duration(prometheus.url, train.pid, RUN_S, DEADLINE_S)
                train.kill()
                killed_at = time.time()
                energy_used = rig.energy_joules(0) + rig.energy_joules(1) - energy_before
                rig.remove(train.pid)
                wait_until(
                    lambda: _run_messages(telegram, "train.py"), DEADLINE_S, what="train ended"
                )
                _stop(evaluate)
                rig.remove(evaluate.pid)
                wait_until(
                    lambda: _run_messages(telegram, "eval.py"), DEADLINE_S, what="eval ended"
                )
                # Looks after the ends: nothing is reported twice.
                wait_watch_cycles(lambda: app.runs.prometheus.queries, 2, DEADLINE_S)
                scrapes = [t for t, up in _samples(prometheus.url, 'up{job="rigwatch"}') if up]
                train_samples = _samples(
                    prometheus.url, f'rigwatch_gpu_process_start_time_seconds{{pid="{train.pid}"}}'
                )
        runs = {row["run_name"]: row for row in _stored_runs(tmp_path / "bot.db")}
    finally:
        _stop(*[child for child in (train, evaluate) if child is not None])
    assert len(_run_messages(telegram, "train.py")) == 1
    assert len(_run_messages(telegram, "eval.py")) == 1
    text = _run_messages(telegram, "train.py")[0]
    me = psutil.Process().username()
    assert f"👤 {me}" in text and "on the host" in text
    assert "GPU 0, 1 (NVIDIA GeForce RTX 4090)" in text, text
    assert "peak 22.0 GiB GPU memory" in text  # 22 GiB, as /status shows it
    assert "IST" in text  # Asia/Kolkata
    assert "ended" in text.lower() and "succe" not in text.lower()
    assert "hidden" not in text  # the command line's arguments stay out
    assert f"shared its cards with eval.py (pid {evaluate.pid}) meanwhile" in text
    summary = __import__("json").loads(runs["train.py"]["summary"])
    duration = runs["train.py"]["ended_at"] - runs["train.py"]["start_time"]
    # Its end is precise to a scrape however slow the machine: Prometheus's last sample of it,
    # no earlier than the last scrape before the kill.
    ended_at = runs["train.py"]["ended_at"]
    assert ended_at == train_samples[-1][0]
    assert ended_at >= max(t for t in scrapes if t <= killed_at)
    assert duration > RUN_S
    # What the two cards' counters advanced by while it ran.
    expected = energy_used / 3.6e6
    assert abs(summary["kwh"] - expected) < 0.3 * expected, (summary, expected)
    assert summary["estimated"] is False
    assert abs(summary["cost"] - summary["kwh"] * 0.30) < 1e-9
    assert f"≈ €{summary['cost']:.2f}" in text
    assert "estimated" not in text
    other = _run_messages(telegram, "eval.py")[0]
    assert "(estimated from power readings)" in other
    assert "NVIDIA GeForce RTX 4090" in other and "GPU 1, 2" in other
    assert f"shared its cards with train.py (pid {train.pid}) meanwhile" in other
    assert __import__("json").loads(runs["eval.py"]["summary"])["estimated"] is True


def test_bot_killed_mid_run_and_restarted_reports_exactly_once(tmp_path, telegram):
    rig = SimulatedRig(tmp_path / "scenario.json", cards=1)
    train = training_process(tmp_path, "train.py")
    try:
        rig.place(train.pid, [0])
        with rig, rig_with_prometheus(tmp_path, rig) as (_, prometheus):
            env = bot_env(
                tmp_path, telegram.url, FAST_RUNS, prometheus=prometheus.url, port=free_port()
            )
            with bot_process(env) as (bot, _):
                _wait_recorded(tmp_path / "bot.db", 1)
                bot.kill()
            # It ends while no bot runs, past min_duration, and Prometheus has seen it go.
            wait_past_min_duration(prometheus.url, train.pid, MIN_DURATION_S, DEADLINE_S)
            _stop(train)
            rig.remove(train.pid)
            _gone_from_prometheus(prometheus.url, train.pid)
            queries = lambda: prometheus_instant_queries(prometheus.url)  # noqa: E731
            with bot_process(env):
                wait_until(
                    lambda: _run_messages(telegram, "train.py"), DEADLINE_S, what="the message"
                )
                wait_watch_cycles(queries, 2, DEADLINE_S)  # looks after it: nothing twice
            with bot_process(env):  # and once more: still nothing twice
                wait_watch_cycles(queries, 2, DEADLINE_S)
    finally:
        _stop(train)
    assert len(_run_messages(telegram, "train.py")) == 1


def test_prometheus_outage_never_invents_an_end(tmp_path, telegram):
    rig = SimulatedRig(tmp_path / "scenario.json", cards=1)
    train = training_process(tmp_path, "train.py")
    try:
        rig.place(train.pid, [0])
        with rig, rig_with_prometheus(tmp_path, rig) as (_, prometheus):
            env = bot_env(tmp_path, telegram.url, FAST_RUNS, prometheus=prometheus.url)
            with running_bot(env) as (app, _):
                looks = lambda: app.runs.prometheus.queries  # noqa: E731
                _wait_recorded(tmp_path / "bot.db", 1)
                wait_past_min_duration(prometheus.url, train.pid, MIN_DURATION_S, DEADLINE_S)
                prometheus.stop()
                wait_watch_cycles(looks, 3, DEADLINE_S)  # looks with no data: the run is not ended
                assert _run_messages(telegram, "train.py") == []
                assert _stored_runs(tmp_path / "bot.db")[0]["status"] == "running"
                prometheus.start()
                wait_watch_cycles(looks, 3, DEADLINE_S)  # back, the process is still there
                assert _run_messages(telegram, "train.py") == []
                prometheus.stop()
                _stop(train)
                killed_at = time.time()
                rig.remove(train.pid)
                wait_watch_cycles(looks, 3, DEADLINE_S)
                assert _run_messages(telegram, "train.py") == []
                prometheus.start()
                wait_until(lambda: _run_messages(telegram, "train.py"), DEADLINE_S, what="the end")
                wait_watch_cycles(looks, 2, DEADLINE_S)  # looks after it: nothing twice
    finally:
        _stop(train)
    assert len(_run_messages(telegram, "train.py")) == 1
    row = _stored_runs(tmp_path / "bot.db")[0]
    # Its end is the last moment Prometheus saw it, before the second outage: Prometheus was
    # stopped before the kill, so this holds however slow the machine, with no slack.
    assert row["ended_at"] <= killed_at


def test_reused_pid_is_a_new_run_and_a_container_is_named(tmp_path, telegram):
    # The exporter reads a procfs in which one pid shows first one process (in a Docker
    # container), then another: the pid reused by a new run.
    fake = tmp_path / "proc"
    first = training_process(tmp_path, "first.py")
    second = None
    rig = SimulatedRig(tmp_path / "scenario.json", cards=2)
    try:
        mirror_proc(fake, first.pid, first.pid, f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
        rig.place(first.pid, [0, 1])
        settings = {"runs": {**FAST_RUNS["runs"], "notify_start": True}}
        with (
            rig,
            rig_with_prometheus(tmp_path, rig, f"--path.procfs={fake}", "--no-collector.host") as (
                _,
                prometheus,
            ),
        ):
            env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
            with running_bot(env):
                _wait_recorded(tmp_path / "bot.db", 1)
                # first.py must outlive min_duration to count as a run
                wait_past_min_duration(prometheus.url, first.pid, MIN_DURATION_S, DEADLINE_S)
                second = training_process(tmp_path, "second.py")
                mirror_proc(fake, second.pid, first.pid, "0::/user.slice/session-2.scope\n")
                wait_until(
                    lambda: _run_messages(telegram, "first.py"), DEADLINE_S, what="first ended"
                )
                wait_until(
                    lambda: _started(telegram) == ["second.py"], DEADLINE_S, what="second started"
                )
                # the same for second.py (the same pid) before its end is shown
                start = 'rigwatch_gpu_process_start_time_seconds{run="second.py"}'
                wait_until(
                    lambda: prometheus_has(
                        prometheus.url, f"timestamp({start}) - {start} > {MIN_DURATION_S}"
                    ),
                    DEADLINE_S,
                    what="second.py past min_duration",
                )
                rig.remove(first.pid)
                wait_until(
                    lambda: _run_messages(telegram, "second.py"), DEADLINE_S, what="second ended"
                )
    finally:
        _stop(first, *([second] if second else []))
    ended = _run_messages(telegram, "first.py")
    assert len(ended) == 1
    assert f"🐳 container {DOCKER_ID[:12]}" in ended[0]
    assert len(_run_messages(telegram, "second.py")) == 1
    assert "on the host" in _run_messages(telegram, "second.py")[0]
    # first.py was running before the watch began: no start message for it.
    assert _started(telegram) == ["second.py"]


def _started(telegram) -> list[str]:
    text = "\n".join(telegram.visible_texts(CHAT))
    return re.findall(r"▶️ Run started · (\S+)", text)
