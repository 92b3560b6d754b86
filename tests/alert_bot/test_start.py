"""The bot as a real process at start: the token checked with Telegram (getMe), the first-run
mode README's setup step relies on, exit codes systemd acts on, and settings refused early."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.alert_bot.botkit import (
    BOT_TOKEN,
    CHAT,
    GROUP,
    alert,
    bot_env,
    bot_process,
    notification,
    post,
)
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.support import REPO, free_port, wait_until


def _start(env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alert_bot"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"the bot did not exit:\n{err}") from None
    return proc.returncode, err


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    return _finish(proc)


def test_a_token_telegram_rejects_is_one_line_naming_it_and_exit_2(tmp_path, telegram):
    wrong = BOT_TOKEN.split(":")[0] + ":a-revoked-token"
    env = bot_env(tmp_path, telegram.url, port=free_port())
    # --check-config cannot ask Telegram; the start does, before listening.
    started = time.monotonic()
    code, err = _finish(_start({**env, "TELEGRAM_BOT_TOKEN": wrong}, tmp_path))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rigwatch-bot: configuration error: TELEGRAM_BOT_TOKEN:"), err
    assert "401" in lines[0] and wrong not in err
    assert time.monotonic() - started < 20
    assert telegram.calls_to("getMe", status=401)
    # The first-run mode checks it too.
    code, err = _finish(
        _start({"TELEGRAM_BOT_TOKEN": wrong, "TELEGRAM_API_URL": telegram.url}, tmp_path)
    )
    assert code == 2 and "TELEGRAM_BOT_TOKEN" in err, err


def test_telegram_unreachable_at_start_is_retried_while_alerts_are_taken(tmp_path):
    # Nothing answers at the Bot API address yet: the webhook takes alerts all the same, and
    # once Telegram answers the token is checked and the queued alert goes out.
    telegram_port = free_port()
    env = bot_env(tmp_path, f"http://127.0.0.1:{telegram_port}", port=free_port())
    with bot_process(env) as (proc, base):
        assert post(base, notification(alert(summary="queued while away")))[0] == 200
        wait_until(lambda: "will retry" in proc.output(), timeout=10, what="the retry line")
        fake = FakeTelegram(BOT_TOKEN, port=telegram_port).start()
        try:
            wait_until(
                lambda: "queued while away" in "\n".join(fake.texts(CHAT)),
                timeout=40,
                what="the queued alert",
            )
            wait_until(lambda: "accepts the bot token" in proc.output(), timeout=70)
            assert proc.proc.poll() is None
        finally:
            fake.stop()


def test_first_run_answers_start_with_the_chat_id_exactly_as_readme_says(tmp_path, telegram):
    # README, "The Telegram bot", step 2: only the token, then /start in the chat.
    readme = (REPO / "README.md").read_text()
    assert "TELEGRAM_BOT_TOKEN=<token> ~/rigwatch/bin/rigwatch-bot" in readme
    for extra in ({}, {"TELEGRAM_CHAT_ID": "0"}):
        workdir = tmp_path / f"run{len(extra)}"
        workdir.mkdir()
        env = {"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": telegram.url, **extra}
        proc = _start(env, workdir)
        try:
            telegram.inject_message(GROUP, "/start@rigwatch_bot", user_id=CHAT)
            telegram.inject_message(GROUP, "/status", user_id=CHAT)
            wait_until(lambda: len(telegram.texts(GROUP)) >= 2, timeout=20, what="answers")
        finally:
            code, err = _stop(proc)
        start_reply, other_reply = telegram.texts(GROUP)[:2]
        assert f"<code>{GROUP}</code>" in start_reply
        assert f"TELEGRAM_CHAT_ID={GROUP}" in start_reply
        assert "not set up yet" in other_reply and "TELEGRAM_CHAT_ID" in other_reply
        assert code == 0, err
        assert "first-run mode" in err
        assert list(workdir.iterdir()) == []  # no database, nothing left behind
        telegram.calls.clear()
    # Once configured, the missing webhook token is the next thing it asks for.
    code, err = _finish(
        _start({"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_CHAT_ID": str(GROUP)}, tmp_path)
    )
    assert code == 2 and "ALERT_BOT_WEBHOOK_TOKEN" in err, err
    check = subprocess.run(
        [sys.executable, "-m", "alert_bot", "--check-config"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "TELEGRAM_BOT_TOKEN": BOT_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2 and "TELEGRAM_CHAT_ID" in check.stderr


def test_a_busy_port_is_a_runtime_failure_exit_1_not_a_configuration_error(tmp_path, telegram):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = bot_env(tmp_path, telegram.url, port=port)
        code, err = _finish(_start(env, tmp_path))
    assert code == 1, err
    assert "cannot listen on 127.0.0.1:" in err and "configuration error" not in err


def test_units_retry_runtime_failures_and_not_configuration_errors():
    for name in ("rigwatch-bot.service", "rigwatch-exporter.service"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(REPO / "deploy" / "systemd" / name)
        assert unit["Service"]["Restart"] == "on-failure", name
        assert unit["Service"]["RestartPreventExitStatus"] == "2", name


def test_short_webhook_token_and_api_url_shapes_are_refused_with_one_line(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")

    def check(**override: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "alert_bot", "--check-config"],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env, **override},
            capture_output=True,
            text=True,
            timeout=60,
        )

    short = check(ALERT_BOT_WEBHOOK_TOKEN="x")
    assert short.returncode == 2
    assert "ALERT_BOT_WEBHOOK_TOKEN: at least 16 characters" in short.stderr
    assert check(ALERT_BOT_WEBHOOK_TOKEN="0123456789abcdef").returncode == 0
    for url, code in (
        ("http://127.0.0.1:8081", 0),
        ("https://api.telegram.org/", 0),
        ("http://127.0.0.1:8081/bot{0}/{1}", 0),
        ("http://proxy.example/telegram", 0),
        ("http://127.0.0.1:8081/bot", 2),
        ("https://api.telegram.org/bot123:abc", 2),
        ("http://127.0.0.1:8081/bot{0}", 2),
        ("127.0.0.1:8081", 2),
    ):
        result = check(TELEGRAM_API_URL=url)
        assert result.returncode == code, (url, result.stderr)
        if code:
            assert result.stderr.startswith("rigwatch-bot: configuration error: TELEGRAM_API_URL")


def test_an_unknown_alert_bot_variable_is_a_warning_naming_the_nearest(tmp_path, telegram):
    env = bot_env(tmp_path, telegram.url, port=free_port())
    env["ALERT_BOT_LISTN"] = "0.0.0.0:1"
    with bot_process(env) as (proc, _):
        wait_until(lambda: "listening on" in proc.output(), what="the start line")
        output = proc.output()
    # One warning about the environment (the run watch may add its own about Prometheus).
    warnings = [
        line
        for line in output.splitlines()
        if "level=WARNING" in line and "rigwatch.bot.runs" not in line
    ]
    assert len(warnings) == 1, output
    assert "ALERT_BOT_LISTN is not a rigwatch-bot setting" in warnings[0]
    assert "did you mean ALERT_BOT_LISTEN?" in warnings[0]


def test_yaml_booleans_take_exactly_the_words_the_exporter_takes(tmp_path):
    from alert_bot.config import ConfigError, load_config

    env = bot_env(tmp_path, "http://127.0.0.1:9")
    config_file = Path(env["ALERT_BOT_CONFIG"])
    for text, expected in [
        ("true", True), ("On", True), ("'yes'", True), ("1", True), ("'TRUE'", True),
        ("false", False), ("off", False), ("'No'", False), ("0", False),
    ]:  # fmt: skip
        config_file.write_text(f"charts:\n  enabled: {text}\n")
        assert load_config(env).charts.enabled is expected, text
    for text in ("enabled", "2", "'y'", "[]"):
        config_file.write_text(f"charts:\n  enabled: {text}\n")
        try:
            load_config(env)
        except ConfigError as exc:
            assert exc.key == "charts.enabled"
            assert "true/false, 1/0, yes/no or on/off" in str(exc)
        else:
            raise AssertionError(f"{text} was taken as a boolean")


def test_a_yaml_error_says_what_is_wrong_at_its_line(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    cases = {
        "routes:\n  - chat_id: 5\n    match: {rig: rig1\n": ("line 4", "expected ',' or '}'"),
        "watchdog:\n\ttimeout: 10m\n": ("line 2", "cannot start any token"),
        "charts:\n  enabled: true\n enabled: false\n": ("line 3", "expected <block end>"),
    }
    for number, (text, (line, problem)) in enumerate(cases.items()):
        path = tmp_path / f"broken{number}.yml"
        path.write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "alert_bot", "--check-config"],
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": str(REPO),
                **env,
                "ALERT_BOT_CONFIG": str(path),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("rigwatch-bot: configuration error: ALERT_BOT_CONFIG: ")
        assert f"is not valid YAML at {line}, column" in lines[0], lines[0]
        assert problem in lines[0], lines[0]
