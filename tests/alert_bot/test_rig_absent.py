"""A rig that starts late, stops and returns, against a real Prometheus scraping the real
exporter every second on the simulated NVML: its energy counts only the time it reported (never
the window), and /status and /gpu mark it as not reporting, never its old values as current."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from alert_bot.config import load_config
from alert_bot.runs.energy import card_energy
from alert_bot.upstream.prometheus import PrometheusClient
from tests.alert_bot.botkit import bot_env, running_bot, wait_prometheus_has
from tests.alert_bot.runkit import RestartablePrometheus, SimulatedRig, prometheus_config
from tests.alert_bot.test_runs_chat import _ask
from tests.support import free_port, running_exporter, serving_exposition, wait_until

WATTS = 110.0
SCRAPE_S = 1.0  # runkit's Prometheus scrapes and evaluates every second
DAY = 86400.0


class LateRig:
    """The exporter on a fixed port that Prometheus scrapes: started, stopped and started again
    by the test (a rig switched on late, off, and on)."""

    def __init__(self, rig: SimulatedRig):
        self.rig = rig
        self.port = free_port()
        self._exporter: contextlib.AbstractContextManager | None = None

    def on(self) -> None:
        self._exporter = running_exporter(
            self.rig.path, "--nvml.retry-max-seconds=0.5", port=self.port
        )
        self._exporter.__enter__()

    def off(self) -> None:
        if self._exporter is not None:
            self._exporter.__exit__(None, None, None)
            self._exporter = None


@contextlib.contextmanager
def late_rig(tmp_path: Path) -> Iterator[tuple[LateRig, RestartablePrometheus]]:
    """Prometheus first, scraping a rig not switched on yet (one card without an energy
    counter at WATTS); everything stopped however the test ends."""
    rig = SimulatedRig(tmp_path / "scenario.json", cards=1, watts=WATTS)
    rig.without_counter(0)
    switch = LateRig(rig)
    prometheus = RestartablePrometheus(
        tmp_path / "prometheus", prometheus_config(f"127.0.0.1:{switch.port}")
    )
    with rig:
        prometheus.start()
        try:
            yield switch, prometheus
        finally:
            switch.off()
            prometheus.stop()


def _reported_seconds(prometheus: str) -> float:
    """The time the rig reported, from Prometheus's raw power samples (not the bot's method):
    each run of samples a scrape apart lasts from its first to its last sample plus one scrape
    interval (the time the last one stands for)."""
    client = PrometheusClient(prometheus)
    rows = client.samples("rigwatch_gpu_power_watts[1h]")
    assert len(rows) == 1, rows
    times = [t for t, _ in rows[0]["values"]]
    total, first = 0.0, times[0]
    for before, after in zip(times, times[1:], strict=False):
        if after - before > 2.5 * SCRAPE_S:  # a gap: the rig was off
            total += before - first + SCRAPE_S
            first = after
    return total + times[-1] - first + SCRAPE_S


def _wait_samples(prometheus: str, expr: str, count: int) -> None:
    wait_prometheus_has(prometheus, f"count_over_time({expr}[1h]) >= {count}", timeout=90)


def test_energy_counts_only_the_time_a_late_rig_reported(tmp_path, telegram):
    """110 W on a card without an energy counter, for about 25 s out of a day: the day's
    energy is 110 W × the seconds with samples (within 15 %), not 110 W × 24 h (2.64 kWh), and
    the 20 s it was off add nothing."""
    settings = {"energy": {"price_per_kwh": 0.25, "currency": "EUR", "host_watts": 60}}
    with late_rig(tmp_path) as (rig, prometheus):
        rig.on()
        _wait_samples(prometheus.url, "rigwatch_gpu_power_watts", 12)
        rig.off()
        # Off for 20 scrapes: every one of them failed.
        wait_prometheus_has(
            prometheus.url, 'count_over_time((up{job="rigwatch"} == 0)[1h:1s]) >= 20', 90
        )
        rig.on()
        _wait_samples(prometheus.url, "rigwatch_gpu_power_watts", 24)
        env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
        with running_bot(env):
            config = load_config(env)
            now = time.time()
            cards = card_energy(PrometheusClient(prometheus.url), config, "", now - DAY, now)
            reported = _reported_seconds(prometheus.url)
            energy = _ask(telegram, "/energy rig1 1d")
            status = _ask(telegram, "/status rig1")
    (card,) = cards.values()
    expected = WATTS * reported
    assert card.estimated
    assert abs(card.joules - expected) < 0.15 * expected, (card.joules, expected, reported)
    assert abs(card.seconds - reported) < 0.15 * reported, (card.seconds, reported)
    # The chat: the card's figure as measured, marked estimated; the host share over the time
    # the rig reported, not the day.
    card_line = next(line for line in energy.splitlines() if line.strip().startswith("GPU 0"))
    assert "(estimated from power readings)" in card_line, energy
    kwh = float(re.search(r"GPU 0: ([\d.e-]+) kWh", card_line).group(1))
    assert abs(kwh - expected / 3.6e6) < 0.15 * expected / 3.6e6, energy
    rig_kwh = float(re.search(r"rig1: ([\d.e-]+) kWh", energy).group(1))
    with_host = (WATTS + 60) * reported / 3.6e6
    assert abs(rig_kwh - with_host) < 0.15 * with_host, energy
    today = float(re.search(r"⚡ today ([\d.e-]+) kWh", status).group(1))
    assert abs(today - with_host) < 0.15 * with_host, status


def test_a_rig_that_stops_reporting_shows_no_data_since_and_never_old_values(tmp_path, telegram):
    """While the exporter is stopped, /status, /gpu and /cpu name the rig with "no data since"
    the minute of its last sample (the owner's time zone) and none of its last readings; once
    it is back its cards are shown again."""
    settings = {"timezone": "Europe/Moscow"}
    zone = ZoneInfo("Europe/Moscow")
    with late_rig(tmp_path) as (rig, prometheus):
        rig.on()
        _wait_samples(prometheus.url, "rigwatch_exporter_build_info", 3)
        env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
        with running_bot(env):
            before = _ask(telegram, "/status")
            rig.off()
            stopped = time.time()
            status = wait_until(
                lambda: (text := _ask(telegram, "/status")) and "no data since" in text and text,
                timeout=30,
                interval=1,
                what="/status marking the stopped rig",
            )
            gpu = _ask(telegram, "/gpu rig1")
            cpu = _ask(telegram, "/cpu")
            rig.on()
            back = wait_until(
                lambda: (text := _ask(telegram, "/gpu")) and "°C" in text and text,
                timeout=30,
                interval=1,
                what="/gpu with the rig back",
            )
    assert "GPU 0" in before and "°C" in before and "no data since" not in before, before
    # Silent: the rig is named, with when it was last heard of, and nothing of its last values.
    for text in (status, gpu, cpu):
        assert "rig1" in text, text
        since = re.search(r"no data since (\d\d):(\d\d) MSK", text)
        assert since, text
        minutes = {
            datetime.fromtimestamp(moment, zone).strftime("%H:%M")
            for moment in (stopped - 60, stopped)
        }
        assert f"{since[1]}:{since[2]}" in minutes, (text, minutes)
        assert "°C" not in text and " W" not in text and "util" not in text, text
    assert "no data since" not in back and "GPU 0" in back, back


class FrozenRig:
    """A rig whose samples carry their own timestamps, as pushed samples do: once frozen it
    keeps serving its last moment, so Prometheus writes no stale marker and its instant queries
    still return the old values for five minutes (a push centre whose pushes stopped)."""

    def __init__(self) -> None:
        self.frozen_at: float | None = None

    def exposition(self) -> bytes:
        moment = int((self.frozen_at or time.time()) * 1000)
        card = 'gpu="0",uuid="GPU-frozen"'
        return (
            f'rigwatch_exporter_build_info{{version="0.1.0"}} 1 {moment}\n'
            f"rigwatch_gpu_up{{{card}}} 1 {moment}\n"
            f'rigwatch_gpu_info{{{card},name="Frozen card"}} 1 {moment}\n'
            f"rigwatch_gpu_temperature_celsius{{{card}}} 61 {moment}\n"
        ).encode()


def test_old_values_that_prometheus_still_returns_are_not_shown_as_current(tmp_path, telegram):
    """Samples that stop without a stale marker (a push refused, timestamps frozen) linger in
    Prometheus's instant answers for five minutes; /status names the rig as silent instead."""
    rig = FrozenRig()
    with serving_exposition(rig.exposition) as target:
        prometheus = RestartablePrometheus(
            tmp_path / "prometheus", prometheus_config(target, rig="rig2")
        )
        prometheus.start()
        try:
            _wait_samples(prometheus.url, "rigwatch_exporter_build_info", 3)
            env = bot_env(tmp_path, telegram.url, {}, prometheus=prometheus.url)
            with running_bot(env):
                live = _ask(telegram, "/status rig2")
                rig.frozen_at = time.time()
                status = wait_until(
                    lambda: (t := _ask(telegram, "/status rig2")) and "no data since" in t and t,
                    timeout=30,
                    interval=1,
                    what="/status marking the frozen rig",
                )
                lingering = PrometheusClient(prometheus.url).query(
                    "rigwatch_gpu_temperature_celsius"
                )
        finally:
            prometheus.stop()
    assert "61 °C" in live and "no data since" not in live, live
    # Prometheus still answers with the old reading; the chat does not show it as now.
    assert [r["value"] for r in lingering] == [61.0], lingering
    assert "rig2" in status and "61 °C" not in status and "GPU 0" not in status, status
