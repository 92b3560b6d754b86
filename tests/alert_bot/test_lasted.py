""" "Lasted" and "since" count from when the trouble began, through the real chain (the exporter
on the simulated NVML → Prometheus with the shipped rules, every `for:` 10 s → Alertmanager →
the bot → the fake Telegram): Alertmanager's startsAt comes after the rule's `for:` wait,
Prometheus's ALERTS_FOR_STATE knows when the condition started."""

from __future__ import annotations

import re
import time

from tests.alert_bot.botkit import CHAT, wait_prometheus_has
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.alert_bot.test_e2e import _running_chain, _wait_for_message
from tests.support import build_fake_nvml, make_device, make_scenario, wait_until, write_scenario

WAIT_S = 10  # the rules' `for:` in this test
# Scrape and evaluation every second: the condition is seen within ~2 s of the change.
LAG_S = 4


def _seconds(text: str, words: str) -> int:
    """The seconds of "<words>1m 43s" / "<words>45s" in text."""
    found = re.search(words + r"(?:(\d+)m )?(\d+)s", text)
    assert found, (words, text)
    return int(found[1] or 0) * 60 + int(found[2])


def test_lasted_counts_the_for_wait_and_the_edit_drops_its_stale_ago(tmp_path, telegram):
    build_fake_nvml()
    scenario = tmp_path / "scenario.json"
    cool = make_scenario(devices=[make_device(0, temperature_c=45), make_device(1)])
    hot = make_scenario(devices=[make_device(0, temperature_c=96), make_device(1)])
    write_scenario(scenario, cool)
    with _running_chain(tmp_path, telegram, scenario, {}, wait=f"{WAIT_S}s") as (bot, prom, _):
        wait_prometheus_has(prom, "rigwatch_gpu_temperature_celsius")
        heated = time.time()
        write_scenario(scenario, hot)
        firing = _wait_for_message(
            telegram, "GpuTemperatureCritical", "FIRING", "the alert", timeout=90
        )
        write_scenario(scenario, cool)
        cooled = time.time()
        resolved = _wait_for_message(
            telegram, "GpuTemperatureCritical", "RESOLVED", "the resolved notice", timeout=90
        )
        edit = wait_until(
            lambda: next(
                (
                    text
                    for call in telegram.edits(CHAT)
                    if "GpuTemperatureCritical"
                    in (text := parse_telegram_html(call.params["text"]))
                ),
                None,
            ),
            # The same deadline as the notices above: the edit goes out behind the resolved
            # notice and the alert's chart in the chat's flood limit.
            timeout=90,
            what="the firing message edited as resolved",
        )
        log = bot.output()
    hot_for = cooled - heated
    # The firing message: already WAIT_S and more ago when it arrived (the `for:` wait).
    assert _seconds(firing, r"\(") >= WAIT_S - 1, firing
    # Lasted: the whole time the card was hot, not that less the `for:` wait.
    lasted = _seconds(resolved, "lasted ")
    assert hot_for - LAG_S <= lasted <= hot_for + LAG_S, (lasted, hot_for, resolved)
    assert lasted > hot_for - WAIT_S + LAG_S / 2, (lasted, hot_for)
    # The edited firing message: its header says how long, and the "(… ago)" of the moment it
    # was sent is gone.
    assert abs(_seconds(edit, "lasted ") - lasted) <= 1, edit
    assert " ago)" in firing and " ago)" not in edit, edit
    assert "Traceback" not in log, log[-3000:]
