"""/runs, /energy, today's energy in /status, the daily digest and the time zone, against a
real Prometheus scraping the real exporter; the runs and energy settings' checks; tariffs."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from alert_bot.config import ConfigError, load_config
from alert_bot.runs.energy import segments
from tests.alert_bot.botkit import (
    CHAT,
    WEBHOOK_TOKEN,
    bot_env,
    metric_value,
    running_bot,
    wait_prometheus_has,
)
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.alert_bot.runkit import (
    SimulatedRig,
    rig_with_prometheus,
    training_process,
    wait_past_min_duration,
    wait_watch_cycles,
    watch_deadline,
)
from tests.alert_bot.test_process import _run_cli
from tests.support import wait_until

CYCLE_S = 1  # runs.interval
MIN_DURATION_S = 4  # runs.min_duration
DEADLINE_S = watch_deadline(CYCLE_S, MIN_DURATION_S)
# A command asks Prometheus a few queries: on a loaded machine each may take seconds.
ASK_DEADLINE_S = 30


def _ask(telegram, text: str, chat: int = CHAT) -> str:
    """The reply to one command: /runs, /energy and /status each answer with one message."""
    before = len(telegram.sent(chat))
    telegram.inject_message(chat, text)
    wait_until(lambda: len(telegram.sent(chat)) > before, timeout=ASK_DEADLINE_S, what=text)
    call = telegram.sent(chat)[before]
    return parse_telegram_html(call.params.get("text", ""))


def test_runs_energy_status_and_digest_in_local_time(tmp_path, telegram):
    rig = SimulatedRig(tmp_path / "scenario.json", cards=3, watts=300)
    rig.without_counter(2)
    began = time.time()
    children = []
    settings = {
        "runs": {"interval": f"{CYCLE_S}s", "min_duration": f"{MIN_DURATION_S}s"},
        "energy": {"price_per_kwh": 0.25, "currency": "EUR", "host_watts": 60},
        "timezone": "Pacific/Auckland",
        "digest": {"at": "00:00"},  # any moment is past it: the digest goes out at once
    }
    try:
        with rig, rig_with_prometheus(tmp_path, rig) as (_, prometheus):
            train = training_process(tmp_path, "train.py")
            evaluate = training_process(tmp_path, "eval.py")
            children += [train, evaluate]
            rig.place(train.pid, [0, 1])
            rig.place(evaluate.pid, [2], memory=2 << 30)
            env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
            # The digest goes out at the watch's first look: the cards' utilisation is there
            # for a few scrapes by then, so it has figures to give.
            wait_prometheus_has(
                prometheus.url, "count_over_time(rigwatch_gpu_utilization_ratio[1m]) >= 3"
            )
            with running_bot(env) as (app, _):
                running = app.runs.table.running
                wait_until(lambda: len(running()) == 2, DEADLINE_S, what="two runs")
                # A run shorter than runs.min_duration: recorded, ended, never reported.
                blip = training_process(tmp_path, "blip.py")
                children.append(blip)
                rig.place(blip.pid, [2], memory=1 << 30)
                wait_until(lambda: len(running()) == 3, DEADLINE_S, what="the blip")
                blip.kill()
                rig.remove(blip.pid)
                wait_until(lambda: len(running()) == 2, DEADLINE_S, what="blip gone")
                wait_past_min_duration(prometheus.url, evaluate.pid, MIN_DURATION_S, DEADLINE_S)
                evaluate.kill()
                rig.remove(evaluate.pid)
                wait_until(
                    lambda: any("Run ended" in t for t in telegram.visible_texts(CHAT)),
                    DEADLINE_S,
                    what="eval ended",
                )
                digests = [t for t in telegram.visible_texts(CHAT) if "Daily digest" in t]
                runs = _ask(telegram, "/runs")
                # A week is integrated at 7 s steps (alert_bot/runs/energy.py): the card without
                # a counter needs a few steps of power readings before it has a figure there.
                wait_prometheus_has(
                    prometheus.url,
                    'count_over_time(gpu:rigwatch_energy_watts:rate1m{estimated="true"}[1m]) >= 21',
                )
                energy = _ask(telegram, "/energy rig1 7d")
                bad_period = _ask(telegram, "/energy 45d")
                status = _ask(telegram, "/status rig1")
            # A restart on the same day sends no second digest: the restarted watch looks
            # (each look checks the digest) and has delivered all it queued.
            with running_bot(env) as (app, base):
                wait_watch_cycles(lambda: app.runs.prometheus.queries, 2, DEADLINE_S)
                wait_until(
                    lambda: metric_value(base, "rigwatch_bot_queue_depth") == 0,
                    DEADLINE_S,
                    what="the queue delivered",
                )
            digests_after = [t for t in telegram.visible_texts(CHAT) if "Daily digest" in t]
    finally:
        for child in children:
            child.kill()
            child.wait()
    zone = dt.datetime.now(dt.timezone.utc).astimezone(
        __import__("zoneinfo").ZoneInfo("Pacific/Auckland")
    )
    abbreviation = zone.strftime("%Z")  # NZDT or NZST
    # /runs: the running one with its live figures, the ended one in local time.
    running, ended = runs.split("Ended in the last 24 h")
    assert "train.py (pid" in running and "GPU 0, 1 (NVIDIA GeForce RTX 4090)" in running
    assert re.search(r"mem 12\.0 GiB · util 90% · [\d.]+ kWh ≈ [\d.]+ EUR", running), running
    assert "eval.py" in ended and abbreviation in ended and "GPU 2" in ended
    assert "blip.py" not in ended
    assert not any("Run ended · blip.py" in text for text in telegram.visible_texts(CHAT))
    # It did share GPU 2 with eval.py, and eval.py's message says so.
    assert any("shared its cards with blip.py" in t for t in telegram.visible_texts(CHAT))
    assert "(estimated from power readings)" in ended
    # /energy: per rig (with the host share) and per card; the card without a counter marked.
    assert "GPU energy, last 7 days" in energy and abbreviation in energy
    assert "rig1" in energy and "(host 60 W included)" in energy
    card_lines = {line.split(":")[0].strip(): line for line in energy.splitlines()}
    assert "estimated" not in card_lines["GPU 0"] and "estimated" in card_lines["GPU 2"]
    assert re.search(r"GPU 0: [\d.]+ kWh ≈ [\d.]+ EUR", card_lines["GPU 0"])
    assert bad_period == "An energy window lasts from 1 hour to 30 days."
    assert re.search(r"⚡ today [\d.]+ kWh ≈ [\d.]+ EUR", status), status
    # The digest: once, with the rig's figures.
    assert len(digests) == 1 and len(digests_after) == 1
    found = re.search(
        r"rig1 · ([\d.]+) GPU-hours busy · \d runs ended · 0 alerts fired", digests[0]
    )
    assert found, digests[0]
    # Busy hours count only the time the rig reported: at most its three cards for as long as
    # this test has run, never a day's average × 24 h.
    assert float(found.group(1)) <= 3 * (time.time() - began) / 3600, digests[0]
    assert "peak" in digests[0] and "kWh" in digests[0] and abbreviation in digests[0]


def _config(tmp_path, yaml_text: str):
    path = tmp_path / "bot.yml"
    path.write_text(yaml_text)
    return load_config(
        {
            "TELEGRAM_BOT_TOKEN": "1:x",
            "TELEGRAM_CHAT_ID": "1",
            "ALERT_BOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "ALERT_BOT_CONFIG": str(path),
        }
    )


def test_day_and_night_tariff_cuts_the_window_at_local_times(tmp_path):
    config = _config(
        tmp_path,
        "timezone: Europe/Berlin\nenergy:\n  tariffs:\n"
        "    - {from: '07:00', price_per_kwh: 0.40}\n    - {from: '23:00', price_per_kwh: 0.10}\n",
    )
    berlin = __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    start = dt.datetime(2026, 11, 20, 22, 0, tzinfo=berlin).timestamp()
    end = dt.datetime(2026, 11, 21, 8, 0, tzinfo=berlin).timestamp()
    pieces = segments(config, start, end)
    hours = [(round((b - a) / 3600, 3), price) for a, b, price in pieces]
    assert hours == [(1.0, 0.40), (8.0, 0.10), (1.0, 0.40)]


def test_defaults(tmp_path):
    config = _config(tmp_path, "{}\n")
    assert config.runs.enabled and config.runs.interval == 30 and config.runs.min_duration == 600
    assert not config.runs.notify_start and config.digest_minute is None
    assert config.energy.price_per_kwh is None and config.energy.wall_factor == 1.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("runs:\n  enabled: maybe\n", "runs.enabled"),
        ("runs:\n  interval: often\n", "runs.interval"),
        ("runs:\n  min_duration: -5m\n", "runs.min_duration"),
        ("runs:\n  notify_start: maybe\n", "runs.notify_start"),
        ("runs:\n  intervall: 5s\n", "runs.intervall"),
        ("runs:\n  user_chats: [alice]\n", "runs.user_chats"),
        ("runs:\n  user_chats:\n    alice: her-chat\n", "runs.user_chats.alice"),
        ("runs:\n  user_chats:\n    alice: true\n", "runs.user_chats.alice"),
        ("runs:\n  user_chats:\n    'al ice': 1\n", "runs.user_chats.al ice"),
        ("runs:\n  user_chats_only: sometimes\n", "runs.user_chats_only"),
        ("energy:\n  price_per_kwh: cheap\n", "energy.price_per_kwh"),
        ("energy:\n  price_per_kwh: -1\n", "energy.price_per_kwh"),
        ("energy:\n  wall_factor: 9\n", "energy.wall_factor"),
        ("energy:\n  currency: ''\n", "energy.currency"),
        ("energy:\n  host_watts: lots\n", "energy.host_watts"),
        ("energy:\n  tariffs: [{from: '25:00', price_per_kwh: 1}]\n", "energy.tariffs[0].from"),
        ("energy:\n  tariffs: [{from: '07:00'}]\n", "energy.tariffs[0].price_per_kwh"),
        (
            "energy:\n  price_per_kwh: 1\n  tariffs: [{from: '07:00', price_per_kwh: 1}]\n",
            "energy.tariffs",
        ),
        ("digest:\n  at: noon\n", "digest.at"),
        ("timezone: Mars/Olympus\n", "timezone"),
    ],
)
def test_bad_setting_names_its_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, text)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "langauge: ru\n",
            "langauge: unknown setting (did you mean language? known: access, charts, ",
        ),
        (
            "energy:\n  price_per_kwh: 0.3\n  curency: RUB\n",
            "energy.curency: unknown setting (did you mean currency? known: currency, ",
        ),
        ("runs:\n  xyzzy: 1\n", "runs.xyzzy: unknown setting (known: enabled, "),
        (
            "energy:\n  price_per_kwh: 5,5\n",
            "energy.price_per_kwh: write the decimal with a point: 5.5, not '5,5'",
        ),
        (
            "energy:\n  tariffs: [{from: '07:00', price_per_kwh: '0,4'}]\n",
            "energy.tariffs[0].price_per_kwh: write the decimal with a point: 0.4, not '0,4'",
        ),
    ],
)
def test_a_misspelt_setting_gets_the_nearest_name_and_a_decimal_comma_is_told(
    tmp_path, text, message
):
    """As the exporter's flags do: `langauge` is answered with `language`; a price written the
    way a Russian or German locale writes it is told to use a point."""
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_bad_setting_is_one_line_and_exit_2_from_the_command_line(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    path = tmp_path / "bad.yml"
    path.write_text("timezone: Mars/Olympus\n")
    result = _run_cli({**env, "ALERT_BOT_CONFIG": str(path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rigwatch-bot: configuration error: timezone: unknown time zone 'Mars/Olympus'"
        " (a name like Europe/Berlin)"
    ]
