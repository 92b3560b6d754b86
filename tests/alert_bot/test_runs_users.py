"""Each person their own runs: runs.user_chats sends a run's messages to its Unix user's chat
as well as the rig's (or alone, with runs.user_chats_only), through the same outbox; checked
in the settings, in where the notices go, and end to end with a real process, the real
exporter on the simulated NVML, a real Prometheus, the bot and the fake Telegram."""

from __future__ import annotations

import re

import psutil
import pytest

from alert_bot.alerts.model import Alert, Notification
from alert_bot.alerts.webhook import route
from alert_bot.runs.messages import destinations
from alert_bot.runs.table import Run
from tests.alert_bot.botkit import bot_env, running_bot
from tests.alert_bot.runkit import (
    SimulatedRig,
    rig_with_prometheus,
    training_process,
    wait_past_min_duration,
    wait_watch_cycles,
)
from tests.alert_bot.test_runs import (
    DEADLINE_S,
    FAST_RUNS,
    MIN_DURATION_S,
    _run_messages,
    _stop,
    _wait_recorded,
)
from tests.alert_bot.test_runs_chat import _ask, _config
from tests.support import wait_until

RIG_CHAT = 1  # TELEGRAM_CHAT_ID in test_runs_chat._config
ALICE_CHAT = 2002
BOB_CHAT = 3003


def _run(user: str) -> Run:
    return Run(
        instance="rig1:9835",
        pid=42,
        start_time=1.0,
        rig="rig1",
        run_name="train.py",
        process="python3",
        user=user,
        container="",
    )


def test_user_chats_are_read_and_default_to_none(tmp_path):
    assert _config(tmp_path, "{}\n").runs.user_chats == {}
    config = _config(tmp_path, "runs:\n  user_chats:\n    alice: 111111111\n    bob: '-222'\n")
    assert config.runs.user_chats == {"alice": 111111111, "bob": -222}
    assert config.runs.user_chats_only is False


@pytest.mark.parametrize(
    ("only", "user", "chats"),
    [
        (False, "alice", [RIG_CHAT, ALICE_CHAT]),
        (True, "alice", [ALICE_CHAT]),
        (False, "carol", [RIG_CHAT]),  # not in the map: the rig's chat, as before
        (True, "carol", [RIG_CHAT]),
        (True, "", [RIG_CHAT]),
    ],
)
def test_a_run_goes_to_its_users_chat(tmp_path, only, user, chats):
    config = _config(
        tmp_path,
        f"runs:\n  user_chats_only: {str(only).lower()}\n  user_chats:\n    alice: {ALICE_CHAT}\n",
    )
    notices = destinations(config, _run(user), "🏁 text")
    assert [n.chat_id for n in notices] == chats
    assert all(n.kind == "notice" and n.payload == {"html": "🏁 text"} for n in notices)


def test_the_users_chat_hears_the_end_once_and_the_rig_chat_once(tmp_path, telegram):
    """The test's own Unix user is mapped to one chat; a second run declares its person with
    RIGWATCH_USER (as a run as root in a container would) and is heard in that person's."""
    me = psutil.Process().username()
    rig = SimulatedRig(tmp_path / "scenario.json", cards=2)
    train = evaluate = None
    try:
        chats = {me: ALICE_CHAT, "bob": BOB_CHAT}
        settings = {"runs": {**FAST_RUNS["runs"], "user_chats": chats}}
        with rig, rig_with_prometheus(tmp_path, rig) as (_, prometheus):
            train = training_process(tmp_path, "train.py")
            evaluate = training_process(tmp_path, "eval.py", {"RIGWATCH_USER": "bob"})
            rig.place(train.pid, [0])
            rig.place(evaluate.pid, [1])
            env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
            with running_bot(env) as (app, _):
                _wait_recorded(tmp_path / "bot.db", 2)
                for child in (train, evaluate):  # past runs.min_duration: runs worth reporting
                    wait_past_min_duration(prometheus.url, child.pid, MIN_DURATION_S, DEADLINE_S)
                _stop(train, evaluate)
                rig.remove(train.pid)
                rig.remove(evaluate.pid)
                wait_until(
                    lambda: (
                        _run_messages(telegram, "train.py", ALICE_CHAT)
                        and _run_messages(telegram, "eval.py", BOB_CHAT)
                        and len(_run_messages(telegram, "train.py"))
                        + len(_run_messages(telegram, "eval.py"))
                        >= 2
                    ),
                    DEADLINE_S,
                    what="the ends in the people's and the rig's chats",
                )
                # Looks after the ends: nothing is reported twice.
                wait_watch_cycles(lambda: app.runs.prometheus.queries, 2, DEADLINE_S)
                # Each person's chat asks about its own runs only; the rig's chat sees all.
                asked = {
                    "alice runs": _ask(telegram, "/runs", ALICE_CHAT),
                    "bob runs": _ask(telegram, "/runs", BOB_CHAT),
                    "alice energy": _ask(telegram, "/energy 7d", ALICE_CHAT),
                    "alice status": _ask(telegram, "/status", ALICE_CHAT),
                    "owner runs": _ask(telegram, "/runs"),
                }
                answered = len(telegram.calls_to("answerCallbackQuery"))
                telegram.inject_callback(ALICE_CHAT, "s:1h:deadbeef")
                wait_until(
                    lambda: len(telegram.calls_to("answerCallbackQuery")) > answered,
                    30,
                    what="the button answered",
                )
                refusal = telegram.calls_to("answerCallbackQuery")[-1].params.get("text", "")
    finally:
        _stop(*[child for child in (train, evaluate) if child is not None])
    mine = _run_messages(telegram, "train.py", ALICE_CHAT)
    rigs = _run_messages(telegram, "train.py")
    assert len(mine) == 1 and len(rigs) == 1, (mine, rigs)
    assert f"👤 {me}" in mine[0] and mine[0].strip() == rigs[0].strip()
    assert _run_messages(telegram, "eval.py", ALICE_CHAT) == []  # not hers
    bobs = _run_messages(telegram, "eval.py", BOB_CHAT)
    assert len(bobs) == 1 and "👤 bob" in bobs[0], bobs
    assert len(_run_messages(telegram, "eval.py")) == 1
    assert _run_messages(telegram, "train.py", BOB_CHAT) == []
    assert "train.py" in asked["alice runs"] and "eval.py" not in asked["alice runs"]
    assert "eval.py" in asked["bob runs"] and "train.py" not in asked["bob runs"]
    assert f"Your runs ({me}), last 7 days" in asked["alice energy"], asked["alice energy"]
    assert re.search(r"1 run: [\d.]+ kWh", asked["alice energy"]), asked["alice energy"]
    assert "not allowed" in asked["alice status"]  # nothing but her runs
    assert "train.py" in asked["owner runs"] and "eval.py" in asked["owner runs"]
    assert "only the people this bot is set up for" in refusal, refusal


def test_a_stalled_run_reaches_its_user_and_other_alerts_do_not(tmp_path):
    """GpuRunStalled carries the process's user label (prometheus/rules/runs.yml): the
    webhook also routes it to that user's chat; a rig alert with a user label does not."""
    config = _config(tmp_path, f"runs:\n  user_chats:\n    alice: {ALICE_CHAT}\n")

    def alert(name: str, user: str) -> Alert:
        return Alert("firing", {"alertname": name, "rig": "rig1", "user": user}, {}, "")

    notification = Notification(
        "firing",
        "{}",
        (
            alert("GpuRunStalled", "alice"),
            alert("GpuRunStalled", "carol"),
            alert("GpuTooHot", "alice"),
        ),
    )
    by_chat = {
        n.chat_id: [
            a["labels"]["alertname"] + "/" + a["labels"]["user"] for a in n.payload["alerts"]
        ]
        for n in route(notification, config)
    }
    assert by_chat == {
        RIG_CHAT: ["GpuRunStalled/alice", "GpuRunStalled/carol", "GpuTooHot/alice"],
        ALICE_CHAT: ["GpuRunStalled/alice"],
    }
