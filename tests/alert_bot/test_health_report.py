"""The weekly card-health report end to end: five weeks of two cards written into a real
Prometheus's storage (promtool's OpenMetrics backfill), the wear recording rules of
prometheus/rules/wear.yml evaluated over those weeks by the real rule engine (promtool's rules
backfill against that Prometheus), then the bot as a real process, on the fake Telegram,
sends the week's report naming the card whose cooling and PCIe link drifted, not the steady
one; /health answers the same on demand. The schedule's exactly-once and its postponement
while Prometheus is down are checked on the run watch itself, over a real store."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_bot.config import ConfigError, load_config
from alert_bot.metrics import BotMetrics
from alert_bot.runs.watch import HEALTH_KEY, RunWatch
from alert_bot.store import Store
from alert_bot.upstream import PrometheusClient
from tests.alert_bot.botkit import CHAT, bot_env, bot_process, wait_prometheus_has
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.servers import have_binary, running_prometheus
from tests.support import REPO, free_port, wait_until

pytestmark = pytest.mark.skipif(
    not (have_binary("prometheus") and have_binary("promtool")),
    reason="needs Debian's prometheus and promtool",
)

DAY = 86400
STEP = 290  # seconds between samples: within Prometheus's 5-minute lookback
SPAN = 36 * DAY  # five weeks compared (this week, four weeks before) and a day before them
LABELS = 'job="rigwatch",instance="rig1:9835",rig="rig1"'
CARDS = {
    "0": "GPU-5a1e0c2b-0000-4000-8000-steadysteady",
    "1": "GPU-d41f7e39-1111-4111-8111-driftdriftdr",
}
# Prometheus deletes what is older than its retention (15 days by default) at start.
KEEP = ("--storage.tsdb.retention.time=60d",)
HEALTH = {"health": {"day": "monday", "at": "00:00"}, "timezone": "UTC"}  # due all week


def _month_of_drift(end: int) -> str:
    """OpenMetrics text for two RTX 3090s over SPAN up to end. Both work 18 hours a day at
    250 W of 300 (idle at 30 W the rest). GPU 0 stays at 68 °C ± 3 (noise each sample) and
    has 1 PCIe replay an hour; GPU 1 warms steadily from 66 °C by 10 °C over the span (dust)
    and its link errors go from 1 to 20 an hour in the last week (a riser)."""
    rng = random.Random(23)
    start = end - SPAN
    times = range(start, end + 1, STEP)
    families: dict[str, list[str]] = {}
    for gpu, uuid in CARDS.items():
        card = f'{LABELS},gpu="{gpu}",uuid="{uuid}"'
        replay = 0.0
        for t in times:
            loaded = (t % DAY) >= 6 * 3600
            if gpu == "0":
                temperature = 68 + rng.uniform(-3, 3)
            else:
                temperature = 66 + 10 * (t - start) / SPAN + rng.uniform(-1, 1)
            if not loaded:
                temperature = 40 + rng.uniform(-2, 2)
            last_week = gpu == "1" and t > end - 7 * DAY
            replay += (20 if last_week else 1) * STEP / 3600
            rows = {
                "rigwatch_gpu_temperature_celsius": f"{temperature:.2f}",
                "rigwatch_gpu_power_watts": "250" if loaded else "30",
                "rigwatch_gpu_power_limit_watts": "300",
                "rigwatch_gpu_utilization_ratio": "0.97" if loaded else "0",
                "rigwatch_gpu_pcie_replay_errors_total": f"{int(replay)}",
            }
            for name, value in rows.items():
                families.setdefault(name, []).append(f"{name}{{{card}}} {value} {t}")
            info = f'{card},name="NVIDIA GeForce RTX 3090",pci_bus_id="00000000:0{gpu}:00.0"'
            families.setdefault("rigwatch_gpu_info", []).append(
                f"rigwatch_gpu_info{{{info}}} 1 {t}"
            )
    lines = [line for rows in families.values() for line in rows]
    return "\n".join([*lines, "# EOF", ""])


def _promtool(*args: str) -> None:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Iterator[tuple[Path, int]]:
    """A Prometheus storage holding the five weeks and the recorded hourly wear series over
    them; and the moment the history ends."""
    import time

    work = tmp_path_factory.mktemp("wear")
    end = int(time.time()) // 60 * 60 - 60
    storage = work / "tsdb"
    source = work / "month.om"
    source.write_text(_month_of_drift(end))
    _promtool("tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(storage))
    source.unlink()
    recorded = work / "recorded"
    port = free_port()
    with running_prometheus(work, "global: {}\n", KEEP, port=port, storage=storage) as base:
        wait_prometheus_has(base, "rigwatch_gpu_temperature_celsius")
        # The hourly wear rules evaluated hour by hour over the whole history, by the rule
        # engine against this Prometheus (the group's own 1h interval), into blocks.
        _promtool(
            "tsdb",
            "create-blocks-from",
            "rules",
            "-q",
            f"--url={base}",
            f"--start={end - SPAN + 3600}",
            f"--end={end}",
            f"--output-dir={recorded}",
            str(REPO / "prometheus/rules/wear.yml"),
        )
    for block in recorded.iterdir():
        shutil.move(str(block), storage / block.name)
    yield storage, end
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def prometheus(history, tmp_path) -> Iterator[str]:
    storage, _end = history
    with running_prometheus(tmp_path, "global: {}\n", KEEP, storage=storage) as base:
        wait_prometheus_has(
            base, "last_over_time(gpu:rigwatch_loaded_temperature_celsius:avg1h[2h])"
        )
        yield base


def _report(telegram) -> list[str]:
    return [
        parse_telegram_html(call.params.get("text", ""))
        for call in telegram.sent(CHAT)
        if "Card health" in call.params.get("text", "")
    ]


def test_a_month_of_drift_brings_the_weekly_report_naming_the_card(prometheus, tmp_path, telegram):
    env = bot_env(tmp_path, telegram.url, HEALTH, prometheus=prometheus, port=free_port())
    with bot_process(env) as (bot, _base):
        reports = wait_until(lambda: _report(telegram), timeout=60, what="the weekly report")
        assert len(reports) == 1, reports
        text = reports[0]
        assert "Card health · rig1" in text, text
        assert "GPU 1 · NVIDIA GeForce RTX 3090 · GPU-d41f7e3" in text, text
        assert "GPU 0" not in text and "GPU-5a1e" not in text, text
        # The cooling drift with both figures it rests on, and what to do.
        cooling = next(line for line in text.splitlines() if "hotter under load" in line)
        rise = float(cooling.split("🌡 ", 1)[1].split(" °C", 1)[0])
        assert 6.5 <= rise <= 9.5, cooling  # 10 °C over 36 days: ~8 °C across 28
        assert "this week" in cooling and "four weeks ago" in cooling, cooling
        assert "Clean the heatsink and fans of dust" in text, text
        # The riser: this week's errors against the weekly average before.
        link = next(line for line in text.splitlines() if "PCIe replay errors" in line)
        assert link.startswith("🔌 33"), link  # 20 an hour over 168 hours ≈ 3360
        assert "Reseat or replace the riser" in text, text
        # On demand: the same drift, and nothing about the steady card.
        before = len(telegram.sent(CHAT))
        telegram.inject_message(CHAT, "/health rig1")
        wait_until(lambda: len(telegram.sent(CHAT)) > before, timeout=30, what="/health")
        answer = parse_telegram_html(telegram.sent(CHAT)[before].params["text"])
        assert "GPU 1 · NVIDIA GeForce RTX 3090" in answer and "GPU 0" not in answer, answer
        assert "hotter under load" in answer, answer
        log = bot.output()
    assert "Traceback" not in log, log[-3000:]


def test_the_report_goes_once_a_week_and_waits_for_prometheus(prometheus, tmp_path, telegram):
    """Prometheus unreachable: nothing is queued and the week stays open; reachable: the report
    is queued with the week in one transaction; a restarted bot (a new watch over the same
    store) does not send it again."""
    config = load_config(bot_env(tmp_path, telegram.url, HEALTH))
    store = Store(config.db_path)
    metrics = BotMetrics(lambda: (0, 0.0))
    try:
        down = RunWatch(
            config, store, metrics, PrometheusClient(f"http://127.0.0.1:{free_port()}"), _none
        )
        now = down.clock()
        assert down._health(now) is False
        assert store.state.get(HEALTH_KEY) is None
        assert store.outbox.count() == 0
        up = RunWatch(config, store, metrics, PrometheusClient(prometheus), _none)
        assert up._health(now) is True
        week = store.state.get(HEALTH_KEY)
        assert week is not None
        queued = store.outbox.count()
        assert queued == 1
        again = RunWatch(config, store, metrics, PrometheusClient(prometheus), _none)
        assert again._health(now + 60) is False
        assert store.outbox.count() == queued
        assert store.state.get(HEALTH_KEY) == week
    finally:
        store.close()


def _none() -> None:
    """The watch's wake-up of the delivery worker, which these checks do not run."""


@pytest.mark.parametrize(
    ("health", "key"),
    [
        ({"day": "someday"}, "health.day"),
        ({"at": "25:00"}, "health.at"),
        ({"all_well": 2}, "health.all_well"),
    ],
)
def test_a_bad_health_setting_names_its_key(tmp_path, health, key):
    with pytest.raises(ConfigError) as caught:
        load_config(bot_env(tmp_path, "http://telegram.invalid", {"health": health}))
    assert key in str(caught.value)


def test_health_settings_read_as_written(tmp_path):
    settings = {"day": "Sun", "at": "18:30", "all_well": "yes", "enabled": "on"}
    health = load_config(bot_env(tmp_path, "http://telegram.invalid", {"health": settings})).health
    assert (health.weekday, health.minute, health.all_well, health.enabled) == (6, 1110, True, True)
    assert load_config(bot_env(tmp_path, "http://telegram.invalid")).health.all_well is False
