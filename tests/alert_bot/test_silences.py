"""Silences as the chat shows and makes them, against a real Alertmanager and Prometheus: a
button silences exactly the alerts its message shows, silenced alerts stay visible, the
Watchdog heartbeat is never offered, unsilencing one keeps the other buttons; and /status
marks the card that is hot or throttling."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alert_bot import botkit
from tests.alert_bot.botkit import (
    CHAT,
    running_chat_bot,
    running_rig_services,
    wait_prometheus_has,
)
from tests.alert_bot.botkit import alertmanager_api as _am
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.support import make_device, wait_until

pytestmark = botkit.needs_rig_services()
SW_THERMAL = 0x20  # NVML's clocks event reason bit for software thermal slowdown


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict]:
    """One rig with a card past its slowdown and throttling, and a cool one; an Alertmanager."""
    devices = [
        make_device(0, temperature_c=93, clock_event_reasons=SW_THERMAL),
        make_device(1, temperature_c=86),
        make_device(2, temperature_c=41),
    ]
    with running_rig_services(
        tmp_path_factory.mktemp("silences"),
        devices,
        "rigwatch_gpu_throttle_reason_active",
        evaluate=True,
    ) as services:
        yield services


def _fire(services: dict, *label_sets: dict) -> None:
    _am(services, "/api/v2/alerts", [{"labels": labels} for labels in label_sets], "POST")
    names = {labels["alertname"] for labels in label_sets}
    wait_until(
        lambda: names <= {a["labels"]["alertname"] for a in _am(services, "/api/v2/alerts")},
        what="alerts in Alertmanager",
    )


def _silence(services: dict, alertname: str, hours: float = 2, matchers: list | None = None) -> str:
    now = time.time()
    body = {
        "matchers": matchers or [{"name": "alertname", "value": alertname, "isRegex": False}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + hours * 3600)),
        "createdBy": "someone@alertmanager-ui",
        "comment": "made elsewhere",
    }
    return _am(services, "/api/v2/silences", body, "POST")["silenceID"]


def _active(services: dict) -> list[dict]:
    return [s for s in _am(services, "/api/v2/silences") if s["status"]["state"] == "active"]


def _expire_all(services: dict) -> None:
    for silence in _active(services):
        _am(services, f"/api/v2/silence/{silence['id']}", method="DELETE")


@pytest.fixture
def bot(tmp_path: Path, telegram, services):
    with running_chat_bot(tmp_path, telegram, services) as (app, base):
        try:
            yield app, base
        finally:
            _expire_all(services)


def _ask(telegram, text: str) -> object:
    before = len(telegram.sent(CHAT))
    telegram.inject_message(CHAT, text)
    wait_until(lambda: len(telegram.sent(CHAT)) > before, timeout=15, what=text)
    return telegram.sent(CHAT)[before]


def _visible(call) -> str:
    return parse_telegram_html(call.params["text"])


def _keyboard(call) -> list[list[dict]]:
    return json.loads(call.params.get("reply_markup") or "{}").get("inline_keyboard", [])


def test_status_and_gpu_mark_the_hot_and_the_throttling_card(bot, telegram, services):
    wait_prometheus_has(services["prometheus"], "rigwatch_gpu_temperature_celsius >= 93")
    # /status marks by the thresholds the rules record: wait for their first evaluation.
    wait_prometheus_has(
        services["prometheus"], "gpu:rigwatch_gpu_temperature_slowdown_celsius:threshold"
    )
    wait_prometheus_has(
        services["prometheus"], "gpu:rigwatch_gpu_temperature_near_slowdown_celsius:threshold"
    )
    for ask in ("/status", "gpu"):
        text = _visible(_ask(telegram, ask))
        lines = {line.split(":")[0]: line for line in text.splitlines() if "GPU" in line}
        hot, warm, cool = (lines[f"GPU {n} · NVIDIA GeForce RTX 4090"] for n in range(3))
        assert "93 °C 🔥🔥 past slowdown 90 °C" in hot and "throttling (sw_thermal)" in hot
        assert "86 °C 🔥 near slowdown 90 °C" in warm and "throttling" not in warm
        assert "🔥" not in cool and "throttling" not in cool


def test_silenced_alerts_stay_visible_with_their_end_and_the_heartbeat_is_never_listed(
    bot, telegram, services
):
    _fire(
        services,
        {"alertname": "GpuTemperatureCritical", "rig": "rig1", "gpu": "0", "severity": "critical"},
        {"alertname": "Watchdog", "severity": "none"},
    )
    _silence(services, "GpuTemperatureCritical")
    wait_until(
        lambda: any(
            a["status"]["silencedBy"] for a in _am(services, "/api/v2/alerts?silenced=true")
        ),
        what="the alert silenced",
    )
    listing = _ask(telegram, "/alerts")
    text = _visible(listing)
    assert "GpuTemperatureCritical" in text and "(1 silenced)" in text
    assert "🔕 silenced until " in text and " UTC" in text
    assert "Watchdog" not in text
    assert _keyboard(listing) == []  # nothing left to silence: no buttons, none for Watchdog
    status = _visible(_ask(telegram, "/status"))
    assert "GpuTemperatureCritical GPU 0 · 🔕 silenced until" in status
    assert "no firing alerts" not in status
    assert "Watchdog" not in status  # not even under "Other firing alerts"


def test_a_message_button_silences_exactly_the_alerts_it_shows(bot, telegram, services):
    app, base = bot
    shown = [
        {"alertname": "GpuThermalThrottling", "rig": "rig1", "gpu": "0", "severity": "warning"},
        {"alertname": "GpuMemoryAlmostFull", "rig": "rig1", "gpu": "0", "severity": "warning"},
    ]
    other = {"alertname": "GpuPcieReplayErrors", "rig": "rig1", "gpu": "0", "severity": "warning"}
    _fire(services, *shown, other)
    body = botkit.notification(
        *[botkit.alert(name=s["alertname"], gpu="0", severity="warning") for s in shown],
        group_key="two-on-one-card",
    )
    assert botkit.post(base, body)[0] == 200
    wait_until(lambda: telegram.sent(CHAT), what="the message")
    message = telegram.sent(CHAT)[-1]
    four_hours = next(b for b in _keyboard(message)[0] if b["text"].endswith("4h"))
    sent_before = len(telegram.sent(CHAT))
    telegram.inject_callback(
        CHAT, four_hours["callback_data"], message_id=message.response["result"]["message_id"]
    )
    wait_until(lambda: len(_active(services)) == 2, what="two silences")
    # The confirmation goes out once the bot has made every silence it will make.
    wait_until(lambda: len(telegram.sent(CHAT)) > sent_before, what="confirmation")
    silences = _active(services)
    assert len(silences) == 2
    named = sorted(
        next(m["value"] for m in s["matchers"] if m["name"] == "alertname") for s in silences
    )
    assert named == sorted(s["alertname"] for s in shown)

    def silenced_names() -> set[str]:
        return {
            a["labels"]["alertname"]
            for a in _am(services, "/api/v2/alerts?silenced=true")
            if a["status"]["silencedBy"]
        }

    wait_until(lambda: len(silenced_names()) == 2, what="both shown alerts silenced")
    assert "GpuPcieReplayErrors" not in silenced_names()  # the third one still speaks
    wait_until(lambda: len(telegram.sent(CHAT)) > sent_before, what="confirmation")
    confirmation = telegram.sent(CHAT)[-1]
    text = _visible(confirmation)
    assert "2 alerts silenced for 4h" in text
    assert "GpuThermalThrottling rig rig1 gpu 0" in text
    assert "GpuMemoryAlmostFull rig rig1 gpu 0" in text
    assert len(_keyboard(confirmation)) == 2  # one unsilence button per silence


def test_unsilencing_one_keeps_the_other_buttons_and_names_what_ended(bot, telegram, services):
    _silence(services, "FirstSilenced")
    _silence(services, "SecondSilenced")
    listing = _ask(telegram, "/silences")
    keyboard = _keyboard(listing)
    assert len(keyboard) == 2
    pressed = keyboard[0][0]["callback_data"]
    gone = pressed[2:]
    ended = next(s for s in _active(services) if s["id"] == gone)
    ended_name = ended["matchers"][0]["value"]
    telegram.inject_callback(
        CHAT,
        pressed,
        message_id=listing.response["result"]["message_id"],
        reply_markup={"inline_keyboard": keyboard},
    )
    wait_until(lambda: telegram.calls_to("editMessageReplyMarkup"), what="keyboard edited")
    edited = json.loads(telegram.calls_to("editMessageReplyMarkup")[-1].params["reply_markup"])
    assert edited["inline_keyboard"] == keyboard[1:]
    wait_until(lambda: "removed by" in _visible(telegram.sent(CHAT)[-1]), what="confirmation")
    assert f"alertname={ended_name}" in _visible(telegram.sent(CHAT)[-1])
    assert [s["id"] for s in _active(services)] == [keyboard[1][0]["callback_data"][2:]]


def test_every_matcher_is_shown_with_its_operator_and_a_mute_reads_as_what_it_does(
    bot, telegram, services
):
    """Alertmanager's isEqual/isRegex give four operators; a listing without them reads a
    negative matcher as its opposite. A /mute (rig=X, alertname!~pipeline) reads as a sentence."""
    _silence(
        services,
        "",
        matchers=[
            {"name": "alertname", "value": "GpuHot", "isRegex": False, "isEqual": False},
            {"name": "gpu", "value": "0|1", "isRegex": True, "isEqual": True},
            {"name": "instance", "value": "rig9.*", "isRegex": True, "isEqual": False},
            {"name": "rig", "value": "rig9", "isRegex": False, "isEqual": True},
        ],
    )
    listing = _visible(_ask(telegram, "/silences"))
    assert "alertname!=GpuHot, gpu=~0|1, instance!~rig9.*, rig=rig9" in listing
    _ask(telegram, "/mute rig2 2h")
    wait_until(lambda: len(_active(services)) == 2, what="the mute's silence")
    listing = _visible(_ask(telegram, "/silences"))
    assert "all of rig2's alerts except the pipeline's own" in listing
    assert "alertname=~" not in listing


def test_the_watchdog_names_a_silence_on_the_heartbeat_made_elsewhere(tmp_path, telegram, services):
    settings = {"watchdog": {"enabled": True, "timeout": "1500ms", "check_interval": "100ms"}}
    env = botkit.bot_env(tmp_path, telegram.url, settings, alertmanager=services["alertmanager"])
    with botkit.running_bot(env, run_updates=False) as (app, base):
        beat = botkit.alert(name="Watchdog", severity="none", gpu=None, rig="", summary="heartbeat")
        assert botkit.post(base, botkit.notification(beat, group_key="wd"))[0] == 200
        _silence(services, "Watchdog")
        try:
            wait_until(
                lambda: any("pipeline is silent" in t for t in telegram.visible_texts(CHAT)),
                timeout=10,
                what="silence notice",
            )
        finally:
            _expire_all(services)
    notice = next(t for t in telegram.visible_texts(CHAT) if "pipeline is silent" in t)
    assert "A silence in Alertmanager matches the Watchdog heartbeat" in notice
    assert "alertname=Watchdog by someone@alertmanager-ui" in notice
