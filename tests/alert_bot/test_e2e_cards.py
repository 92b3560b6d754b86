"""A card lost before the exporter started, through the whole chain: the exporter on the
simulated NVML and a sysfs fixture → a real Prometheus with prometheus/rules/*.yml → a real
Alertmanager with prometheus/alertmanager.yml → the bot → the fake Telegram: a message naming
the card by index and bus id and saying what to check, and /gpu showing it on a line of its own
(and a card bound to vfio-pci on another).
The clock is shortened as in test_e2e.py."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

from tests.alert_bot.botkit import CHAT, wait_prometheus_has
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.alert_bot.test_e2e import (
    _message_with,
    _running_chain,
    _wait_for_message,
)
from tests.alert_bot.test_e2e import (
    pytestmark as pytestmark,  # the same skip: needs Debian's prometheus and alertmanager
)
from tests.exporter.sysfs_tree import rig_tree
from tests.support import (
    build_fake_nvml,
    make_scenario,
    wait_until,
    write_scenario,
)


def test_card_lost_at_start_reaches_the_chat_named_by_bus_id(tmp_path, telegram):
    build_fake_nvml()
    scenario = tmp_path / "scenario.json"
    three = make_scenario(3)
    three["devices"][2]["lost"] = True
    write_scenario(scenario, three)
    # The three cards, and a fourth NVIDIA card bound to vfio-pci that NVML never sees.
    tree = rig_tree(tmp_path / "sys")
    chain = _running_chain(tmp_path, telegram, scenario, {}, f"--path.sysfs={tree.root}")
    with chain as (bot, prometheus, _):
        wait_prometheus_has(prometheus, "rigwatch_gpu_open_failure_info")
        firing = _wait_for_message(
            telegram,
            "GpuCannotBeOpened",
            "FIRING",
            "the alert for the card lost at start in Telegram",
            timeout=90,
        )
        assert (
            "GPU 2 (0000:03:00.0) on rig1: on the bus, the driver cannot reach it (lost)" in firing
        ), firing
        assert "reseat its riser and PCIe power cables" in firing
        assert "dmesg" in firing
        # Nothing else about this card pages twice.
        assert _message_with(telegram, "GpuLost", "FIRING") is None

        lost_line = (
            "❌ GPU 2 (0000:03:00.0) on rig1: on the bus, the driver cannot reach it — lost since "
        )
        # "since" comes from a 10 s subquery: a few seconds after the first scrape.
        reply = wait_until(
            lambda: (text := _ask_gpu(telegram)) and lost_line in text and text,
            timeout=30,
            interval=2,
            what="/gpu naming the lost card with its start",
        )
        assert "GPU 0 · NVIDIA GeForce RTX 4090: 🌡 45 °C" in reply, reply
        assert "GPU 1 · NVIDIA GeForce RTX 4090: 🌡 45 °C" in reply, reply
        assert reply.count("GPU 2") == 1, reply
        assert (
            "❌ GPU 0000:0b:00.0 on rig1: on the bus, not served by the NVIDIA driver "
            "(held by vfio-pci) since "
        ) in reply, reply
        log = bot.output()
    assert "Traceback" not in log, log[-3000:]


def test_a_card_lost_while_running_shows_in_gpu_with_its_reason_and_since_when(tmp_path, telegram):
    """A card the exporter had open, lost later: once NVML is re-initialised it is a card that
    cannot be opened, and /gpu names why and since when, not only "lost / unreachable"."""
    with _two_cards(tmp_path, telegram) as (bot, scenario, cards):
        lost_at = time.time()
        cards["devices"][1]["lost"] = True
        write_scenario(scenario, cards)

        reply = wait_until(
            lambda: (text := _ask_gpu(telegram)) and "GPU 1" in text and " since " in text and text,
            timeout=60,
            interval=2,
            what="/gpu naming the card lost while running with its reason and start",
        )
        line = next(x for x in reply.splitlines() if "GPU 1" in x)
        assert "lost" in line and "lost / unreachable" not in line, reply
        since = re.search(r" since (\d\d):(\d\d)", line)
        assert since, line
        # The start of the outage (the minute it was lost, or the next: the subquery's 10 s),
        # compared by the minute so the bot's time zone does not matter.
        minute = int(time.strftime("%M", time.gmtime(lost_at)))
        assert int(since.group(2)) in {minute, (minute + 1) % 60}, line
        log = bot.output()
    assert "Traceback" not in log, log[-3000:]


@contextlib.contextmanager
def _two_cards(tmp_path: Path, telegram) -> Iterator[tuple]:
    """The whole chain on two healthy cards, both scraped; yields (the bot's process, the
    scenario file, the scenario) for the test to change a card."""
    build_fake_nvml()
    scenario = tmp_path / "scenario.json"
    cards = make_scenario(2)
    write_scenario(scenario, cards)
    with _running_chain(tmp_path, telegram, scenario, {}) as (bot, prometheus, _):
        wait_prometheus_has(prometheus, 'rigwatch_gpu_up{gpu="1"} == 1')
        yield bot, scenario, cards


def _ask_gpu(telegram) -> str:
    before = len(telegram.sent(CHAT))
    telegram.inject_message(CHAT, "/gpu")

    def answer() -> str | None:
        # An alert about the card (and its chart) goes to the same chat and may arrive before
        # the answer.
        calls = telegram.sent(CHAT)[before:]
        texts = [parse_telegram_html(c.params["text"]) for c in calls if "text" in c.params]
        return next((t for t in texts if "FIRING" not in t), None)

    return wait_until(answer, timeout=15, what="/gpu")


def test_a_hung_card_shows_in_gpu_as_not_answering_and_since_when(tmp_path, telegram):
    """A card whose reads hang past the scrape deadline reads rigwatch_gpu_up 0 while the
    exporter keeps it open: /gpu says it is not answering, why, and since when (the minute it
    was last seen answering), never "lost / unreachable" alone nor its last values."""
    with _two_cards(tmp_path, telegram) as (bot, scenario, cards):
        hung_at = time.time()
        cards["devices"][1]["hang_ms"] = {"nvmlDeviceGetTemperature": 20_000}
        write_scenario(scenario, cards)
        reply = wait_until(
            lambda: (text := _ask_gpu(telegram)) and "not answering" in text and text,
            timeout=60,
            interval=2,
            what="/gpu naming the hung card",
        )
        replied_at = time.time()
        cards["devices"][1]["hang_ms"] = {}
        write_scenario(scenario, cards)
        log = bot.output()
    line = next(x for x in reply.splitlines() if "GPU 1" in x)
    assert "its reads missed the scrape deadline since" in line, reply
    assert "°C" not in line, line
    since = re.search(r" since (\d\d):(\d\d)", line)
    assert since, line
    # The last moment it answered: between a step of the 10 s subquery before it hung and the
    # reply (a hung read that returns after its 20 s lets one scrape through before the next
    # hangs), compared by the minute so the bot's time zone does not matter.
    minutes = {
        int(time.strftime("%M", time.gmtime(moment)))
        for moment in range(int(hung_at) - 20, int(replied_at) + 1)
    }
    assert int(since.group(2)) in minutes, line
    assert "GPU 0" in reply and "°C" in next(x for x in reply.splitlines() if "GPU 0" in x)
    assert "Traceback" not in log, log[-3000:]
