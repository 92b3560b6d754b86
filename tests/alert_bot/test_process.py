"""The bot as a real process: configuration errors, SIGKILL in the middle of delivery and a
restart (everything still arrives), and the bot token never showing up in its output."""

from __future__ import annotations

import collections
import re
import subprocess
import sys

from tests.alert_bot.botkit import (
    BOT_TOKEN,
    CHAT,
    alert,
    bot_env,
    bot_process,
    notification,
    post,
)
from tests.alert_bot.fake_telegram import FloodRules
from tests.support import free_port, wait_until


def _run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in env.items()}
    return subprocess.run(
        [sys.executable, "-m", "alert_bot", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ".", **clean},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_configuration_is_one_line_naming_the_key_and_exit_2(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    good = _run_cli(env, "--check-config")
    assert good.returncode == 0, good.stderr
    cases = [
        ({"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "not-a-token"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_CHAT_ID": "general"}, "TELEGRAM_CHAT_ID"),
        ({"ALERT_BOT_WEBHOOK_TOKEN": ""}, "ALERT_BOT_WEBHOOK_TOKEN"),
        ({"ALERT_BOT_LISTEN": "10736"}, "ALERT_BOT_LISTEN"),
        ({"PROMETHEUS_URL": "prometheus:9090"}, "PROMETHEUS_URL"),
        ({"ALERT_BOT_CONFIG": str(tmp_path / "missing.yml")}, "ALERT_BOT_CONFIG"),
    ]
    yaml_cases = {
        "delivery:\n  backof_max: 3s\n": "delivery.backof_max",
        "routes:\n  - match: {rig: a}\n": "routes[0].chat_id",
        "routes:\n  - chat_id: 5\n    match_re: {rig: '('}\n": "routes[0].match_re.rig",
        "watchdog:\n  timeout: soon\n": "watchdog.timeout",
        "template: '{{ broken'\n": "template",
        "template: '<div>{{ alertname }}</div>'\n": "template",
        "access:\n  allowed_user_ids: [me]\n": "access.allowed_user_ids[0]",
        "- just\n- a list\n": "ALERT_BOT_CONFIG",
        "watchdog:\n  alertname: ''\n": "watchdog.alertname",
        "delivery:\n  batch_rows: 0\n": "delivery.batch_rows",
        "template_file: latin1.html.j2\n": "template_file",
        "timezone: Mars/Olympus_Mons\n": "timezone",
    }
    # Files that are not UTF-8 text were a traceback, not a line naming the key.
    (tmp_path / "latin1.html.j2").write_bytes(b"\xe9t\xe9 {{ alertname }}")
    (tmp_path / "latin1.yml").write_bytes(b"watchdog:\n  alertname: \xe9t\xe9\n")
    cases.append(({"ALERT_BOT_CONFIG": str(tmp_path / "latin1.yml")}, "ALERT_BOT_CONFIG"))
    cases.append(
        (
            {"TELEGRAM_BOT_TOKEN": "", "TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "latin1.yml")},
            "TELEGRAM_BOT_TOKEN_FILE",
        )
    )
    for number, (text, key) in enumerate(yaml_cases.items()):
        path = tmp_path / f"bad{number}.yml"
        path.write_text(text)
        cases.append(({"ALERT_BOT_CONFIG": str(path)}, key))
    for override, key in cases:
        result = _run_cli({**env, **override})
        assert result.returncode == 2, (override, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"rigwatch-bot: configuration error: {key}"), lines[0]
        assert BOT_TOKEN not in result.stderr


def test_sigkill_mid_delivery_then_restart_delivers_everything(tmp_path, telegram):
    settings = {
        # One alert per message and a slow Telegram, so the kill lands mid-delivery.
        "delivery": {"max_message_chars": 300},
        "rate_limits": {"per_chat_messages": 5, "per_chat_window": "1s"},
    }
    env = bot_env(tmp_path, telegram.url, settings, port=free_port())
    env["ALERT_BOT_LOG_LEVEL"] = "DEBUG"
    telegram.send_delay = 0.15
    telegram.flood = FloodRules(per_chat=(5, 1.0))  # a chat allowed as fast as the bot sends
    outputs = []
    with bot_process(env) as (proc, base):
        telegram.go_down(1.5)  # some failed requests, whose errors carry URLs, in the log
        for number in range(20):
            body = notification(
                alert(summary=f"crash-{number}-end " + "x" * 150), group_key=f"k{number}"
            )
            assert post(base, body)[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) >= 6, timeout=20, what="some delivered")
        proc.kill()
        outputs.append(proc.output())
    assert telegram.count_status(429) == 0
    before = len(telegram.sent(CHAT))
    assert before < 20
    with bot_process(env) as (proc, base):
        wait_until(
            lambda: all(f"crash-{n}-end" in "\n".join(telegram.texts(CHAT)) for n in range(20)),
            timeout=40,
            what="everything after the restart",
        )
        outputs.append(proc.output())
    counts = collections.Counter(
        match for text in telegram.texts(CHAT) for match in re.findall(r"crash-\d+-end", text)
    )
    assert set(counts) == {f"crash-{n}-end" for n in range(20)}
    # At-least-once: only what was in flight at the kill may arrive twice.
    assert sum(counts.values()) - 20 <= 1, counts
    log = "\n".join(outputs)
    assert "sendMessage" in log  # the HTTP library did log its requests...
    assert BOT_TOKEN not in log  # ...but never with the token
    assert BOT_TOKEN.split(":")[1] not in log


def test_log_level_flag_is_spelled_as_the_exporters_and_the_old_spelling_still_works(tmp_path):
    env = bot_env(tmp_path, "http://127.0.0.1:9")
    for args in (["--log.level", "DEBUG"], ["--log.level=warning"], ["--log-level", "Error"]):
        result = _run_cli(env, *args, "--check-config")
        assert result.returncode == 0, (args, result.stderr)
    assert _run_cli({**env, "ALERT_BOT_LOG_LEVEL": "Debug"}, "--check-config").returncode == 0
    bad = _run_cli(env, "--log.level", "chatty", "--check-config")
    assert bad.returncode == 2
    assert "expected one of debug, info, warning, error" in bad.stderr
    help_text = _run_cli(env, "--help").stdout
    assert "--log.level" in help_text
    assert "--log-level" not in help_text
