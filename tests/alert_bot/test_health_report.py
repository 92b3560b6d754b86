"""The weekly card-health report end to end: five weeks of two cards written into a real
Prometheus's storage (promtool's OpenMetrics backfill), the wear recording rules of
prometheus/rules/wear.yml evaluated over those weeks by the real rule engine (promtool's rules
backfill against that Prometheus), then the bot as a real process, on the fake Telegram,
sends the week's report naming the card whose cooling, throttling, PCIe link and memory
drifted, not the steady one; /health answers the same on demand; every query of the "Card
health" dashboard answers over that month. The schedule's exactly-once and its postponement
while Prometheus is down are checked on the run watch itself, over a real store."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_bot.config import ConfigError, load_config
from alert_bot.reports.schedule import HEALTH_KEY, Reports
from alert_bot.store import Store
from alert_bot.upstream.prometheus import PrometheusClient
from tests.alert_bot.botkit import CHAT, bot_env, bot_process, wait_prometheus_has
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.servers import have_binary, running_prometheus
from tests.stack.stack_support import GRAFANA_DIR, dashboard_queries, substitute_variables
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
# Grafana's variables in the dashboard: the tables' range is a week, the graphs ask for hourly
# steps ($__rate_interval: the step and a 15 s scrape interval).
GRAFANA_RANGES = {"$__range": "7d", "$__rate_interval": "3615s", "$__interval": "1h"}
HEALTH = {"health": {"day": "monday", "at": "00:00"}, "timezone": "UTC"}  # due all week


def _month_of_drift(end: int) -> str:
    """OpenMetrics text for two RTX 3090s over SPAN up to end. Both work 18 hours a day at
    250 W of 300 (idle at 30 W the rest). GPU 0 stays at 68 °C ± 3 (noise each sample), is
    throttled now and then (3 % of samples) and has 1 PCIe replay an hour. GPU 1 warms
    steadily from 66 °C by 10 °C over the span (dust); in the last week one hour in three is
    thermally throttled, its link errors go from 1 to 20 an hour (a riser) and it remaps 2
    memory rows. Both count 2 correctable AER events an hour throughout (no drift). GPU 1's
    fan duty under load rises from 50 % by 25 points over the span (GPU 0's stays at 55 % ± 3)
    and, in the last week, its x16 link falls to x8 one sample in ten."""
    rng = random.Random(23)
    start = end - SPAN
    families: dict[str, list[str]] = {}

    def sample(name: str, labels: str, value: float | str, t: int) -> None:
        families.setdefault(name, []).append(f"{name}{{{labels}}} {value} {t}")

    for gpu, uuid in CARDS.items():
        card = f'{LABELS},gpu="{gpu}",uuid="{uuid}"'
        bus = f"0000:0{gpu}:00.0"
        replay = aer = 0.0
        for t in range(start, end + 1, STEP):
            loaded = (t % DAY) >= 6 * 3600
            last_week = gpu == "1" and t > end - 7 * DAY
            if not loaded:
                temperature = 40 + rng.uniform(-2, 2)
            elif gpu == "0":
                temperature = 68 + rng.uniform(-3, 3)
            else:
                temperature = 66 + 10 * (t - start) / SPAN + rng.uniform(-1, 1)
            throttled = (t // 3600) % 3 == 0 if last_week else rng.random() < 0.03
            replay += (20 if last_week else 1) * STEP / 3600
            aer += 2 * STEP / 3600
            sample("rigwatch_gpu_temperature_celsius", card, f"{temperature:.2f}", t)
            sample("rigwatch_gpu_power_watts", card, 250 if loaded else 30, t)
            sample("rigwatch_gpu_power_limit_watts", card, 300, t)
            sample("rigwatch_gpu_utilization_ratio", card, 0.97 if loaded else 0, t)
            if not loaded:
                fan = 0.30
            elif gpu == "0":
                fan = 0.55 + rng.uniform(-0.03, 0.03)
            else:
                fan = 0.50 + 0.25 * (t - start) / SPAN
            sample("rigwatch_gpu_fan_speed_ratio", card + ',fan="0"', f"{fan:.3f}", t)
            fell_back = last_week and (t // STEP) % 10 == 0
            sample("rigwatch_gpu_pcie_link_width", card, 8 if fell_back else 16, t)
            sample("rigwatch_gpu_pcie_link_max_width", card, 16, t)
            sample("rigwatch_gpu_pcie_link_generation", card, 4, t)
            sample("rigwatch_gpu_pcie_link_max_generation", card, 4, t)
            sample(
                "rigwatch_gpu_throttle_reason_active",
                card + ',reason="hw_thermal"',
                int(loaded and throttled),
                t,
            )
            sample("rigwatch_gpu_pcie_replay_errors_total", card, int(replay), t)
            info = f'{card},name="NVIDIA GeForce RTX 3090",pci_bus_id="{bus}"'
            sample("rigwatch_gpu_info", info, 1, t)
            if t % 1800 < STEP:  # slow counters: two samples an hour are plenty
                rows = 2 if last_week and t > end - 3 * DAY else 0
                sample("rigwatch_gpu_remapped_rows", card + ',type="correctable"', rows, t)
                sample("rigwatch_gpu_retired_pages", card + ',cause="single_bit_ecc"', 0, t)
                if gpu == "0":  # once per rig: the dashboards' variables read it
                    sample("rigwatch_exporter_build_info", LABELS + ',version="0.1.0"', 1, t)
                sample(
                    "rigwatch_pci_aer_events_total",
                    f'{LABELS},pci_bus_id="{bus}",source="device",severity="correctable"',
                    int(aer),
                    t,
                )
    lines = [line for rows in families.values() for line in rows]
    return "\n".join([*lines, "# EOF", ""])


def _rules_start(end: int) -> int:
    """Where the rules backfill starts: an hour into the history (each point averages the hour
    before it), moved to 10 minutes past a 2-hour block boundary. promtool 2.42 imports in
    2-hour chunks from the start, and when the first chunk is shorter than the rule group's 1h
    interval it writes nothing at all (exit status 0, no message): found by trying starts."""
    first = end - SPAN + 3600
    return (first // 7200 + 1) * 7200 + 600


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
        wait_prometheus_has(base, "last_over_time(rigwatch_gpu_temperature_celsius[1h])")
        # The hourly wear rules evaluated hour by hour over the whole history, by the rule
        # engine against this Prometheus (the group's own 1h interval), into blocks.
        _promtool(
            "tsdb",
            "create-blocks-from",
            "rules",
            "-q",
            f"--url={base}",
            f"--start={_rules_start(end)}",
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
        # The riser's advice once, though two findings (errors, link fallback) lead to it.
        assert text.count("Reseat or replace the riser") == 1, text
        # Throttled one hour in three this week, 3 % of the time four weeks ago; two rows.
        slowed = next(line for line in text.splitlines() if "slowed by heat or power" in line)
        shares = [int(n) for n in re.findall(r"(\d+) %", slowed)]
        assert 30 <= shares[0] <= 37 and shares[1] <= 5, slowed
        assert "🧩 2 memory rows or pages taken out of use this week, 0 in" in text, text
        # The fans asked for more at the same power: ~19 points over 28 days of a 25-point rise.
        fans = next(line for line in text.splitlines() if "its fans asked for" in line)
        duty = [int(n) for n in re.findall(r"(\d+) %", fans)]
        assert 15 <= duty[0] - duty[1] <= 23, fans
        # The link fell back one sample in ten this week, never four weeks ago.
        fallback = next(line for line in text.splitlines() if "below its best width" in line)
        shares = [int(n) for n in re.findall(r"(\d+) %", fallback)]
        assert 5 <= shares[0] <= 15 and shares[1] == 0, fallback
        # The AER counts did not drift: no line for them.
        assert "AER" not in text, text
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
    try:
        down = Reports(config, store, PrometheusClient(f"http://127.0.0.1:{free_port()}"))
        now = time.time()
        assert down.health(now) is False
        assert store.state.get(HEALTH_KEY) is None
        assert store.outbox.count() == 0
        up = Reports(config, store, PrometheusClient(prometheus))
        assert up.health(now) is True
        week = store.state.get(HEALTH_KEY)
        assert week is not None
        queued = store.outbox.count()
        assert queued == 1
        again = Reports(config, store, PrometheusClient(prometheus))
        assert again.health(now + 60) is False
        assert store.outbox.count() == queued
        assert store.state.get(HEALTH_KEY) == week
    finally:
        store.close()


def test_every_card_health_dashboard_query_answers_over_the_month(history, prometheus):
    """The dashboard's queries as Grafana sends them (tables over a week, graphs at hourly
    steps), at the end of the month: every one has data, and the cooling table tells the
    drifting card from the steady one by the same figures as the report."""
    _storage, end = history
    board = json.loads((GRAFANA_DIR / "dashboards" / "card-health.json").read_text())
    client = PrometheusClient(prometheus)
    answers = {}
    for title, expr, _instant in dashboard_queries(board):
        result = client.query(substitute_variables(expr, GRAFANA_RANGES), at=end)
        assert result, f"{title}: no data for {expr}"
        answers.setdefault(title, []).append(result)
    assert len(answers) >= 9
    change = {r["metric"]["gpu"]: r["value"] for r in answers["Temperature under load"][2]}
    assert change["1"] >= 6 and abs(change["0"]) < 1, change
    replay = {r["metric"]["gpu"]: r["value"] for r in answers["PCIe replay errors"][0]}
    assert replay["1"] > 3000 and replay["0"] < 200, replay
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector, label = variable["definition"][len("label_values(") : -1].rsplit(",", 1)
            # Grafana reads a variable's values over the dashboard's range; an hour will do.
            over = f"last_over_time({substitute_variables(selector)}[1h])"
            found = client.query(f"group by ({label}) ({over})", at=end)
            assert found, variable["name"]


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
