"""README's first commands, run as written on a copy of the checkout with a fresh home: the
quickstart's virtualenv install and exporter (answering without an NVIDIA driver, as README
says), the same exporter on the simulated NVML library as the Quickstart shows it, then the
Telegram bot's step 2 (install the bot, start it with only the token, /start)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.alert_bot.botkit import BOT_TOKEN
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.support import REPO, ManagedProcess, free_port, http_get, wait_until


def _readme_block(after: str) -> list[str]:
    """The command lines of the first ```sh block after a heading or line of README."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after) :]
    block = re.search(r"```sh\n(.*?)```", rest, re.DOTALL).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def _checkout_copy(target: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def test_readme_quickstart_and_first_bot_run_in_a_fresh_virtualenv(tmp_path):
    checkout = _checkout_copy(tmp_path / "rigwatch")
    home = tmp_path / "home"
    home.mkdir()
    # A clean environment: no virtualenv of the suite's on PATH, the system's python3.
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
    }
    (quickstart,) = _readme_block("## Quickstart")
    assert quickstart.startswith("python3 -m venv ~/rigwatch && ")
    install, start = quickstart.rsplit(" && ", 1)
    installed = subprocess.run(
        ["bash", "-c", install], cwd=checkout, env=env, capture_output=True, text=True, timeout=540
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    port = free_port()
    exporter = ManagedProcess(
        ["bash", "-c", f"exec {start}"],
        env={**env, "RIGWATCH_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}", "LD_LIBRARY_PATH": ""},
        cwd=checkout,
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200,
            timeout=60,
            what="the exporter",
        )
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        output = exporter.output()
        exporter.stop()
    assert "rigwatch_nvml_up 0.0" in metrics or "rigwatch_nvml_up 0" in metrics, output
    assert "rigwatch_host_memory_total_bytes" in metrics

    # No GPU here: the same install on the simulated NVML library, the Quickstart's command as
    # written, serving the two cards of the example scenario.
    (simulated,) = _readme_block("No GPU here?")
    assert simulated.startswith("make -C tests/fake_nvml && ") and "~/rigwatch/bin/" in simulated
    port = free_port()
    exporter = ManagedProcess(
        ["bash", "-c", simulated],
        env={**env, "RIGWATCH_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"},
        cwd=checkout,
    )
    try:
        wait_until(
            lambda: "rigwatch_nvml_up 1" in http_get(f"http://127.0.0.1:{port}/metrics")[1],
            timeout=120,
            what="the exporter on the simulated library",
        )
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    except TimeoutError as exc:
        raise AssertionError(exporter.output()) from exc
    finally:
        output = exporter.output()
        exporter.stop()
    for card in ("NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 3090"):
        assert f'name="{card}"' in metrics, output

    # The Telegram bot, step 2: install the bot, start it with only the token, /start.
    bot_install, bot_start = _readme_block("2. Learn the chat's id")
    installed = subprocess.run(
        ["bash", "-c", bot_install],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert bot_start.startswith("TELEGRAM_BOT_TOKEN=<token> ")
    with FakeTelegram(BOT_TOKEN) as telegram:
        command = bot_start.replace("<token>", BOT_TOKEN)
        bot = ManagedProcess(
            ["bash", "-c", f"exec env {command}"],
            env={**env, "TELEGRAM_API_URL": telegram.url},
            cwd=home,
        )
        try:
            telegram.inject_message(4242, "/start")
            wait_until(lambda: telegram.texts(4242), timeout=60, what="the /start answer")
        finally:
            output = bot.output()
            code = bot.stop()
        assert "TELEGRAM_CHAT_ID=4242" in telegram.texts(4242)[0], output
        assert code == 0, output
