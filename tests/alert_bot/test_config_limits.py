"""Settings that cannot work are refused at start, each with one line naming its key: numbers
that are not finite, intervals and timeouts below their floor, times of day YAML read as
base-60 numbers; and the currency symbol reaches the chat's HTML escaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alert_bot.config import ConfigError, load_config
from tests.alert_bot.botkit import bot_env
from tests.support import REPO

REFUSED = [
    ("energy:\n  price_per_kwh: .inf\n", "energy.price_per_kwh", "finite number"),
    ("energy:\n  price_per_kwh: '1e309'\n", "energy.price_per_kwh", "finite number"),
    ("energy:\n  price_per_kwh: .nan\n", "energy.price_per_kwh", "finite number"),
    (
        "energy:\n  tariffs:\n    - {from: '00:00', price_per_kwh: .inf}\n",
        "energy.tariffs[0].price_per_kwh",
        "finite number",
    ),
    ("runs:\n  interval: 1ms\n", "runs.interval", "at least 1s"),
    ("runs:\n  interval: .inf\n", "runs.interval", "finite duration"),
    ("webhook:\n  read_timeout: 0.001ms\n", "webhook.read_timeout", "at least 1s"),
    ("watchdog:\n  check_interval: 1ms\n", "watchdog.check_interval", "at least 0.1s"),
    ("delivery:\n  backoff_initial: 10ms\n", "delivery.backoff_initial", "at least 0.1s"),
    (
        "energy:\n  tariffs:\n    - {from: 7:00, price_per_kwh: 0.2}\n",
        "energy.tariffs[0].from",
        'write the time in quotes, like "07:30" (unquoted, YAML read it as 420)',
    ),
]


@pytest.mark.parametrize(("text", "key", "problem"), REFUSED)
def test_a_setting_that_cannot_work_is_refused_naming_its_key(tmp_path, text, key, problem):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    Path(env["ALERT_BOT_CONFIG"]).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.key == key
    assert problem in str(caught.value), str(caught.value)


def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    Path(env["ALERT_BOT_CONFIG"]).write_text("energy:\n  price_per_kwh: .inf\n")
    result = subprocess.run(
        [sys.executable, "-m", "alert_bot", "--check-config"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rigwatch-bot: configuration error: energy.price_per_kwh: expected a finite number, got inf"
    ]


def test_floors_leave_sane_values_alone(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    Path(env["ALERT_BOT_CONFIG"]).write_text(
        "runs:\n  interval: 1s\nwebhook:\n  read_timeout: 1s\n"
        "watchdog:\n  check_interval: 100ms\n"
        "energy:\n  tariffs:\n    - {from: '07:00', price_per_kwh: 0.2}\n"
    )
    config = load_config(env)
    assert config.runs.interval == 1.0
    assert config.read_timeout == 1.0
    assert config.watchdog.check_interval == 0.1
    assert config.energy.tariffs[0].start_minute == 420


def test_the_currency_symbol_is_escaped_in_the_html_the_chat_gets(tmp_path):
    from alert_bot.runs.energy import kwh_text

    env = bot_env(tmp_path, "http://127.0.0.1:9")
    Path(env["ALERT_BOT_CONFIG"]).write_text("energy:\n  price_per_kwh: 0.3\n  currency: '<b>&'\n")
    text = kwh_text(load_config(env), 2.0, 0.6, False)
    assert "&lt;b&gt;&amp;" in text and "<b>" not in text, text
