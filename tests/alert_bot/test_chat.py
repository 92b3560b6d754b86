"""The chat side against real services: every command from an allowed chat and from a stranger
(data from a real Prometheus scraping the real exporter on the simulated NVML), silence buttons
creating and expiring real silences in a real Alertmanager, and the chart of a critical alert."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.alert_bot import botkit
from tests.alert_bot.botkit import (
    CHAT,
    STRANGER,
    running_chat_bot,
    running_scraped_rig,
    two_card_rig,
)
from tests.alert_bot.botkit import alertmanager_api as _am
from tests.alert_bot.fake_telegram import FloodRules, parse_telegram_html
from tests.support import (
    REPO,
    http_get,
    make_device,
    make_scenario,
    wait_until,
    write_scenario,
)

pytestmark = botkit.needs_rig_services()


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[dict]:
    """Exporter (two simulated cards, one hot) → Prometheus; and an Alertmanager."""
    with two_card_rig(tmp_path_factory.mktemp("chat"), evaluate=True) as services:
        yield services


@pytest.fixture
def bot(tmp_path: Path, telegram, services):
    with running_chat_bot(tmp_path, telegram, services) as (app, base):
        yield app, base


def _ask(telegram, chat: int, text: str, user: int | None = None, replies: int = 1) -> list:
    before = len(telegram.sent(chat))
    telegram.inject_message(chat, text, user_id=user)
    wait_until(lambda: len(telegram.sent(chat)) >= before + replies, timeout=15, what=text)
    time.sleep(0.1)
    return telegram.sent(chat)[before:]


def _visible(call) -> str:
    text = call.params.get("text", call.params.get("caption", ""))
    return parse_telegram_html(text)


def test_command_menu_and_start_help(bot, telegram):
    commands = json.loads(telegram.calls_to("setMyCommands")[0].params["commands"])
    assert {c["command"] for c in commands} == {
        "start",
        "help",
        "status",
        "gpu",
        "cpu",
        "alerts",
        "silences",
        "graph",
        "mute",
        "runs",
        "energy",
        "health",
    }
    mine = _visible(_ask(telegram, CHAT, "/start")[0])
    assert str(CHAT) in mine and "is allowed" in mine
    theirs = _visible(_ask(telegram, STRANGER, "/start")[0])
    assert str(STRANGER) in theirs and "not allowed" in theirs
    assert f"TELEGRAM_CHAT_ID={STRANGER}" in theirs
    help_text = _visible(_ask(telegram, CHAT, "/help@rigwatch_bot")[0])
    for name in ("/status", "/gpu", "/cpu", "/alerts", "/silences", "/graph", "/mute", "/health"):
        assert name in help_text


def test_gpu_cpu_status_from_prometheus(bot, telegram, services):
    app, base = bot
    for ask in ("/gpu", "gpu", "/gpu rig1", "GPU"):
        text = _visible(_ask(telegram, CHAT, ask)[0])
        assert "rig1" in text
        assert "GPU 0 · NVIDIA GeForce RTX 4090: 🌡 83 °C" in text, text
        assert "GPU 1 · NVIDIA GeForce RTX 4090: 🌡 41 °C" in text
        assert "util 10%" in text and "120/450 W" in text and "fan 30%" in text
        assert "mem 1.0/24.0 GiB" in text
    assert "No data" in _visible(_ask(telegram, CHAT, "/gpu nosuchrig")[0])
    for ask in ("/cpu", "cpu"):
        text = _visible(_ask(telegram, CHAT, ask)[0])
        assert text.startswith("🖥 rig1:")
        assert "load " in text and "mem " in text and "disk / " in text and "busy " in text
    _am(services, "/api/v2/alerts", [{"labels": {"alertname": "HostHot", "rig": "rig1"}}], "POST")
    wait_until(lambda: _am(services, "/api/v2/alerts"), what="alert in Alertmanager")
    status = _visible(_ask(telegram, CHAT, "/status")[0])
    assert "rig1" in status and "GPU 0" in status and "load " in status
    assert "HostHot" in status
    assert botkit.metric_value(base, "rigwatch_bot_commands_total", {"command": "gpu"}) == 5
    assert botkit.metric_value(base, "rigwatch_bot_commands_total", {"command": "status"}) == 1


def test_strangers_get_no_data(bot, telegram):
    app, base = bot
    for ask in ("/status", "/gpu", "gpu", "/cpu", "cpu", "/alerts", "/silences", "/graph gpu"):
        replies = _ask(telegram, STRANGER, ask)
        assert len(replies) == 1
        text = _visible(replies[0])
        assert "not allowed" in text, (ask, text)
        assert "°C" not in text and "rig1" not in text
    assert telegram.calls_to("sendPhoto") == []
    assert botkit.metric_value(base, "rigwatch_bot_commands_total", {"command": "refused"}) == 8


def test_with_a_user_list_others_in_the_allowed_chat_are_strangers(tmp_path, telegram):
    """access.allowed_user_ids: only listed users, in the allowed chat or privately."""
    group, listed, other = -100777, 4242, 4343
    env = botkit.bot_env(tmp_path, telegram.url, {"access": {"allowed_user_ids": [listed]}})
    env["TELEGRAM_CHAT_ID"] = str(group)
    with botkit.running_bot(env) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        refused = _visible(_ask(telegram, group, "/gpu", user=other)[0])
        assert "not allowed" in refused
        served = _visible(_ask(telegram, group, "/gpu", user=listed)[0])
        assert "not allowed" not in served and "Prometheus" in served  # served; none to ask
        private = _visible(_ask(telegram, listed, "/cpu", user=listed)[0])
        assert "not allowed" not in private and "Prometheus" in private
        telegram.inject_callback(group, "s:whatever:1h", user_id=other)
        wait_until(lambda: telegram.calls_to("answerCallbackQuery"), what="button answer")
        assert "Sorry" in telegram.calls_to("answerCallbackQuery")[-1].params["text"]
        assert botkit.metric_value(base, "rigwatch_bot_commands_total", {"command": "refused"}) == 2


def test_graph_sends_png_charts(bot, telegram):
    for ask, title in (
        ("/graph gpu", "GPU temperature"),
        ("/graph mem 6h", "memory used"),
        ("/graph cpu 24h", "CPU busy"),
        ("/graph disk 7d", "root filesystem"),
        ("/graph max(rigwatch_host_load1) 1h", "max(rigwatch_host_load1)"),
    ):
        reply = _ask(telegram, CHAT, ask)[0]
        assert reply.method == "sendPhoto", _visible(reply)
        assert reply.files["photo"].startswith(b"\x89PNG")
        assert len(reply.files["photo"]) > 5000
        assert title in _visible(reply)
    assert "No data" in _visible(_ask(telegram, CHAT, "/graph no_such_metric_anywhere")[0])
    assert "Prometheus" in _visible(_ask(telegram, CHAT, "/graph rate(oops[")[0])
    assert "Usage" in _visible(_ask(telegram, CHAT, "/graph")[0])


def test_silence_buttons_create_and_expire_real_silences(bot, telegram, services):
    app, base = bot
    labels = {"alertname": "GpuHotForButtons", "rig": "rig1", "gpu": "0", "severity": "warning"}
    _am(services, "/api/v2/alerts", [{"labels": labels}], "POST")
    wait_until(
        lambda: any(
            a["labels"].get("alertname") == "GpuHotForButtons"
            for a in _am(services, "/api/v2/alerts")
        ),
        what="alert in Alertmanager",
    )
    one = botkit.alert(name="GpuHotForButtons", gpu="0", severity="warning")
    assert botkit.post(base, botkit.notification(one))[0] == 200
    wait_until(lambda: telegram.sent(CHAT), what="notification")
    message = telegram.sent(CHAT)[-1]
    buttons = json.loads(message.params["reply_markup"])["inline_keyboard"][0]
    four_hours = next(b["callback_data"] for b in buttons if b["text"].endswith("4h"))
    assert len(four_hours.encode()) <= 64

    def active_silences():
        return [s for s in _am(services, "/api/v2/silences") if s["status"]["state"] == "active"]

    # A stranger pressing it is refused, politely, and nothing changes.
    telegram.inject_callback(STRANGER, four_hours)
    wait_until(lambda: telegram.calls_to("answerCallbackQuery"), what="refusal")
    refusal = telegram.calls_to("answerCallbackQuery")[-1].params
    assert "Sorry" in refusal["text"] and refusal["show_alert"] == "True"
    assert active_silences() == []

    # Someone in the allowed chat creates the silence.
    sent_before = len(telegram.sent(CHAT))
    telegram.inject_callback(CHAT, four_hours, message_id=message.response["result"]["message_id"])
    wait_until(lambda: active_silences(), what="silence created")
    silence = active_silences()[0]
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers["alertname"] == "GpuHotForButtons" and matchers["gpu"] == "0"
    assert silence["createdBy"] == f"telegram:user{CHAT}"
    assert "4h" in silence["comment"]
    wait_until(lambda: len(telegram.sent(CHAT)) > sent_before, what="confirmation")
    confirmation = telegram.sent(CHAT)[-1]
    assert "silenced for 4h" in _visible(confirmation)
    unsilence = json.loads(confirmation.params["reply_markup"])["inline_keyboard"][0][0]
    assert unsilence["callback_data"] == f"u:{silence['id']}"
    wait_until(
        lambda: (
            not any(
                a["labels"].get("alertname") == "GpuHotForButtons"
                for a in _am(services, "/api/v2/alerts?silenced=false")
            )
        ),
        what="alert silenced in Alertmanager",
    )

    # /silences lists it; a stranger's unsilence is refused; the allowed user's expires it.
    listing = _visible(_ask(telegram, CHAT, "/silences")[0])
    assert "alertname=GpuHotForButtons" in listing
    telegram.inject_callback(STRANGER, unsilence["callback_data"])
    time.sleep(0.5)
    assert [s["id"] for s in active_silences()] == [silence["id"]]
    telegram.inject_callback(
        CHAT, unsilence["callback_data"], message_id=confirmation.response["result"]["message_id"]
    )
    wait_until(lambda: not active_silences(), what="silence expired")
    expired = [s for s in _am(services, "/api/v2/silences") if s["id"] == silence["id"]][0]
    assert expired["status"]["state"] == "expired"
    # The bot answers the press after Alertmanager expired the silence: wait for it.
    wait_until(
        lambda: any(
            c.params["text"] == "Silence removed." for c in telegram.calls_to("answerCallbackQuery")
        ),
        what="unsilence answered",
    )
    answers = [c.params["text"] for c in telegram.calls_to("answerCallbackQuery")]
    assert "Silenced for 4h." in answers and "Silence removed." in answers
    wait_until(lambda: telegram.calls_to("editMessageReplyMarkup"), what="button removed")
    wait_until(lambda: "removed by" in _visible(telegram.sent(CHAT)[-1]), what="notice")
    assert "alertname=GpuHotForButtons" in _visible(telegram.sent(CHAT)[-1])
    assert "No active silences" in _visible(_ask(telegram, CHAT, "/silences")[0])


def test_alerts_command_lists_firing_alerts_with_buttons(bot, telegram, services):
    _am(
        services,
        "/api/v2/alerts",
        [{"labels": {"alertname": "ListedAlert", "rig": "rig1", "severity": "critical"}}],
        "POST",
    )
    wait_until(
        lambda: any(
            a["labels"]["alertname"] == "ListedAlert" for a in _am(services, "/api/v2/alerts")
        ),
        what="alert in Alertmanager",
    )
    reply = _ask(telegram, CHAT, "/alerts")[0]
    text = _visible(reply)
    assert "firing alert" in text and "ListedAlert" in text
    keyboard = json.loads(reply.params["reply_markup"])["inline_keyboard"]
    assert keyboard and all(len(b["callback_data"].encode()) <= 64 for row in keyboard for b in row)
    # Pressing the first row's 1h button silences that alert in Alertmanager.
    before = len(_am(services, "/api/v2/silences"))
    telegram.inject_callback(CHAT, keyboard[0][0]["callback_data"])
    wait_until(lambda: len(_am(services, "/api/v2/silences")) > before, what="silence")


def test_a_critical_alert_comes_with_a_chart_of_its_expression(bot, telegram, services):
    app, base = bot
    expr = "rigwatch_gpu_temperature_celsius > 80"
    generator = (
        services["prometheus"]
        + "/graph?"
        + urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "1"})
    )
    hot = botkit.alert(
        name="GpuTemperatureCritical", severity="critical", gpu="0", generator=generator
    )
    assert botkit.post(base, botkit.notification(hot))[0] == 200
    wait_until(lambda: telegram.calls_to("sendPhoto"), timeout=20, what="chart")
    text_call = telegram.calls_to("sendMessage")[-1]
    photo = telegram.calls_to("sendPhoto")[-1]
    assert photo.files["photo"].startswith(b"\x89PNG")
    assert "GpuTemperatureCritical" in _visible(photo)
    replied_to = json.loads(photo.params["reply_parameters"])["message_id"]
    assert replied_to == text_call.response["result"]["message_id"]
    # A chart that cannot be drawn costs only the chart: the text still goes.
    broken = botkit.alert(
        name="GpuLost",
        severity="critical",
        gpu="1",
        generator="http://x/graph?g0.expr=" + urllib.parse.quote("absent_metric_xyz > 1"),
    )
    photos = len(telegram.calls_to("sendPhoto"))
    assert botkit.post(base, botkit.notification(broken, group_key="lost"))[0] == 200
    wait_until(lambda: "GpuLost" in _visible(telegram.calls_to("sendMessage")[-1]), what="text")
    time.sleep(0.5)
    assert len(telegram.calls_to("sendPhoto")) == photos


def test_the_update_loop_outlives_an_update_it_cannot_read(tmp_path, telegram):
    """An update the client library cannot parse (here a message without its chat) raised
    something other than a Telegram error and ended the update loop: no command worked again."""
    with botkit.running_bot(botkit.bot_env(tmp_path, telegram.url)) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        telegram._add_update({"message": {"message_id": 1, "text": "/start"}})
        reply = _visible(_ask(telegram, CHAT, "/start")[0])
        assert str(CHAT) in reply and "is allowed" in reply
        assert http_get(base + "/healthz")[0] == 200
        # Should the loop end all the same, the health check says so.
        app.updates.stop()
        wait_until(lambda: not app.updates.alive(), timeout=10, what="update loop ended")
        status, text = http_get(base + "/healthz")
        assert status == 503 and "update loop" in text


def test_a_default_group_upgraded_to_a_supergroup_may_still_use_commands(tmp_path, telegram):
    """After the default chat (a group) moved to a supergroup, commands from the supergroup are
    the default chat's, not a stranger's."""
    old_group, new_group = -4343, -1004343
    env = botkit.bot_env(tmp_path, telegram.url)
    env["TELEGRAM_CHAT_ID"] = str(old_group)
    with botkit.running_bot(env) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        telegram.inject_message(old_group, "", migrate_to_chat_id=new_group)
        wait_until(lambda: app.store.migrations.resolve(old_group) == new_group, what="migration")
        reply = _visible(_ask(telegram, new_group, "/start")[0])
        assert "is allowed" in reply, reply
        reply = _visible(_ask(telegram, new_group, "/gpu")[0])
        assert "not allowed" not in reply and "Prometheus" in reply, reply


class _RecordingAlertmanager(BaseHTTPRequestHandler):
    """Records every request's method and path; answers 200 with an empty body."""

    def _record(self) -> None:
        self.server.requests.append((self.command, self.path))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _record

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


def test_unsilence_takes_only_a_silence_id(tmp_path, telegram):
    """The id in an unsilence button went into Alertmanager's URL as it came ("../" and all)."""
    alertmanager = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingAlertmanager)
    alertmanager.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=alertmanager.serve_forever, daemon=True).start()
    try:
        env = botkit.bot_env(
            tmp_path,
            telegram.url,
            alertmanager=f"http://127.0.0.1:{alertmanager.server_address[1]}",
        )
        with botkit.running_bot(env) as (app, base):
            wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
            telegram.inject_callback(CHAT, "u:../../../-/reload")
            wait_until(lambda: telegram.calls_to("answerCallbackQuery"), what="answer")
            answer = telegram.calls_to("answerCallbackQuery")[-1].params["text"]
            assert answer == "This button is not one of mine."
            silence_id = "0f9a3b2c-1d2e-4f50-8a6b-7c8d9e0f1a2b"
            telegram.inject_callback(CHAT, f"u:{silence_id}")
            wait_until(
                lambda: ("DELETE", f"/api/v2/silence/{silence_id}") in alertmanager.requests,
                what="the expiry",
            )
            # It is read first, so that the confirmation can name what ended.
            assert {path for _, path in alertmanager.requests} == {f"/api/v2/silence/{silence_id}"}
    finally:
        alertmanager.shutdown()
        alertmanager.server_close()


def test_updates_already_handled_are_not_handled_again_after_a_restart(tmp_path, telegram):
    """The update offset lived in memory only: a bot stopped before its next poll confirmed
    the last updates got them again at the next start (a button press acted on twice)."""
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        update_id = telegram.inject_message(CHAT, "/help")
        wait_until(lambda: telegram.sent(CHAT), what="help")
        app.updates.stop()  # now, before a poll confirms the update to Telegram
    polls_before = len(telegram.calls_to("getUpdates"))
    with botkit.running_bot(env) as (app, base):
        wait_until(
            lambda: len(telegram.calls_to("getUpdates")) > polls_before, what="the first poll"
        )
        first = telegram.calls_to("getUpdates")[polls_before]
        assert int(first.params["offset"]) == update_id + 1
        time.sleep(0.5)
        assert len(telegram.sent(CHAT)) == 1


def test_graph_narrows_to_a_rig_and_a_card(bot, telegram):
    reply = _ask(telegram, CHAT, "/graph gpu rig1 0 5m")[0]
    assert reply.method == "sendPhoto", _visible(reply)
    assert _visible(reply) == "📈 GPU temperature on rig1 GPU 0 — last 5 minutes"
    # A young Prometheus may have too little for a chart: either answer names the window.
    assert "last 90 minutes" in _visible(_ask(telegram, CHAT, "/graph gpu rig1 0 1h30m")[0])
    assert (
        _visible(_ask(telegram, CHAT, "/graph gpu rig1 0 1h2x")[0])
        == "'2x' in '1h2x': unknown unit x; use m, h, d"
    )
    assert "No data" in _visible(_ask(telegram, CHAT, "/graph gpu rig9 0")[0])
    assert "No data" in _visible(_ask(telegram, CHAT, "/graph mem rig9")[0])
    assert _ask(telegram, CHAT, "/graph mem rig1 6h")[0].method == "sendPhoto"
    assert "Usage" in _visible(_ask(telegram, CHAT, "/graph gpu rig1 zero")[0])


def test_mute_quiets_a_rig_with_one_real_silence_and_the_button_ends_it(bot, telegram, services):
    app, base = bot

    def mutes():
        return [
            s
            for s in _am(services, "/api/v2/silences")
            if s["status"]["state"] == "active" and "rigwatch mute" in s.get("comment", "")
        ]

    assert "No rig is muted" in _visible(_ask(telegram, CHAT, "/mute")[0])
    # A stranger cannot mute, and nothing is created.
    refusal = _visible(_ask(telegram, STRANGER, "/mute rig1 2h")[0])
    assert "not allowed" in refusal
    assert mutes() == []
    for bad, answer in (
        ("/mute rig1", "Usage: /mute"),
        ("/mute rig1 soon", "'soon' is not a duration; write it like 30m, 2h or 1d\nUsage: /mute"),
        ("/mute rig1 1h2x", "'2x' in '1h2x': unknown unit x; use m, h, d\nUsage: /mute"),
        ("/mute rig1 30d", "A mute lasts from 1 minute to 7 days."),
    ):
        assert _visible(_ask(telegram, CHAT, bad)[0]).startswith(answer), bad
    assert mutes() == []

    reply = _ask(telegram, CHAT, "/mute rig1 1h30m swapping a riser")[0]
    text = _visible(reply)
    assert "rig1 muted until" in text and "swapping a riser" in text
    assert "Watchdog" in text and "AlertBotDeliveryFailing" in text
    (silence,) = mutes()
    assert silence["createdBy"] == f"telegram:user{CHAT}"
    matchers = {m["name"]: m for m in silence["matchers"]}
    assert set(matchers) == {"rig", "alertname"}
    assert matchers["rig"]["value"] == "rig1" and matchers["rig"]["isEqual"]
    assert not matchers["alertname"]["isEqual"] and matchers["alertname"]["isRegex"]
    length = _parse(silence["endsAt"]) - _parse(silence["startsAt"])
    assert 5390 <= length <= 5410

    # In Alertmanager: the rig's alerts are silenced, the Watchdog and delivery alerts are not.
    sent = [
        {"labels": {"alertname": "MutedProbe", "rig": "rig1", "severity": "warning"}},
        {"labels": {"alertname": "Watchdog", "rig": "rig1", "severity": "none"}},
        {"labels": {"alertname": "AlertBotDeliveryFailing", "rig": "rig1"}},
        {"labels": {"alertname": "MutedProbe", "rig": "rig2", "severity": "warning"}},
    ]
    _am(services, "/api/v2/alerts", sent, "POST")

    def states():
        return {
            (a["labels"]["alertname"], a["labels"]["rig"]): a["status"]["state"]
            for a in _am(services, "/api/v2/alerts")
            if a["labels"].get("alertname") in ("MutedProbe", "Watchdog", "AlertBotDeliveryFailing")
        }

    wait_until(lambda: len(states()) == 4, what="probe alerts in Alertmanager")
    assert states() == {
        ("MutedProbe", "rig1"): "suppressed",
        ("Watchdog", "rig1"): "active",
        ("AlertBotDeliveryFailing", "rig1"): "active",
        ("MutedProbe", "rig2"): "active",
    }

    # /mute alone lists it; /status shows the rig as muted with its end time.
    listing = _ask(telegram, CHAT, "/mute")[0]
    assert "rig1 muted until" in _visible(listing) and "user1001" in _visible(listing)
    status = _visible(_ask(telegram, CHAT, "/status")[0])
    assert "🔇 rig1 muted until" in status

    # A stranger pressing "end now" is refused; the owner's press expires the silence.
    end = json.loads(reply.params["reply_markup"])["inline_keyboard"][0][0]
    assert end["text"] == "🔔 End now"
    telegram.inject_callback(STRANGER, end["callback_data"])
    time.sleep(0.5)
    assert len(mutes()) == 1
    message_id = reply.response["result"]["message_id"]
    telegram.inject_callback(CHAT, end["callback_data"], message_id=message_id)
    wait_until(lambda: mutes() == [], what="mute expired")
    wait_until(lambda: "Mute ended" in _visible(telegram.sent(CHAT)[-1]), what="ended notice")
    assert "muted" not in _visible(_ask(telegram, CHAT, "/status")[0])
    assert botkit.metric_value(base, "rigwatch_bot_commands_total", {"command": "unmute"}) == 1


def _parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def test_charts_from_the_real_renderer_for_the_docs(tmp_path, telegram):
    """A critical alert's chart and a /graph, drawn by the real renderer from a real Prometheus
    scraping the real exporter while card 0 heats past its slowdown temperature.
    RIGWATCH_CHART_DIR=docs keeps them (README shows docs/chart-*.png)."""
    rules = yaml.safe_load((REPO / "prometheus/rules/gpu.yml").read_text())["groups"]
    rule = next(r for g in rules for r in g["rules"] if r.get("alert") == "GpuTemperatureCritical")
    scenario = tmp_path / "scenario.json"

    def cards(hot: float) -> dict:
        return make_scenario(
            devices=[
                make_device(0, temperature_c=hot, temperature_slowdown_c=90),
                make_device(1, temperature_c=62, temperature_slowdown_c=91),
            ]
        )

    write_scenario(scenario, cards(72))
    with running_scraped_rig(
        tmp_path, scenario, "rigwatch_gpu_temperature_celsius", evaluate=True
    ) as prometheus:
        hot_since = None
        for second in range(36):  # 72 °C → 93 °C and holding
            temperature = min(72 + second * 0.9, 93)
            if temperature >= 90 and hot_since is None:
                hot_since = time.time()
            write_scenario(scenario, cards(temperature))
            time.sleep(1)
        telegram.flood = FloodRules(per_chat=(20, 1.0))
        env = botkit.bot_env(
            tmp_path,
            telegram.url,
            {"charts": {"range": "45s"}, "timezone": "Europe/Moscow"},
            prometheus=prometheus,
        )
        hot = botkit.alert(
            name="GpuTemperatureCritical",
            severity="critical",
            gpu="0",
            summary="GPU 0 (NVIDIA GeForce RTX 4090) on rig1 is at 93 °C, past its slowdown"
            " at 90 °C",
            starts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hot_since)),
            generator=prometheus + "/graph?" + urllib.parse.urlencode({"g0.expr": rule["expr"]}),
        )
        hot["labels"]["name"] = "NVIDIA GeForce RTX 4090"  # as the rule's group_left gives
        with botkit.running_bot(env) as (app, base):
            wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
            assert botkit.post(base, botkit.notification(hot))[0] == 200
            wait_until(lambda: telegram.calls_to("sendPhoto"), timeout=30, what="chart")
            chart = telegram.calls_to("sendPhoto")[-1].files["photo"]
            graph = _ask(telegram, CHAT, "/graph gpu 1m")[0]
    assert graph.method == "sendPhoto", _visible(graph)
    for png in (chart, graph.files["photo"]):
        assert png.startswith(b"\x89PNG") and len(png) > 10000
    keep = os.environ.get("RIGWATCH_CHART_DIR")
    if keep:
        (Path(keep) / "chart-alert.png").write_bytes(chart)
        (Path(keep) / "chart-graph-gpu.png").write_bytes(graph.files["photo"])
