"""What Telegram sends, read at the client's boundary (alert_bot/telegram/types.py): a field of
the wrong type reads as absent, an update without an id is dropped, and the bot confirms an odd
update and goes on answering the next ones."""

from __future__ import annotations

from alert_bot.telegram.types import Button, Message, Update
from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT
from tests.support import wait_until


def test_an_update_is_read_into_named_fields():
    raw = {
        "update_id": 7,
        "message": {
            "message_id": 3,
            "chat": {"id": -100, "type": "supergroup"},
            "from": {"id": 42, "username": "ana", "first_name": "Ana"},
            "text": "/status rig1",
            "is_topic_message": True,
            "message_thread_id": 9,
        },
    }
    update = Update.read(raw)
    assert update is not None and update.update_id == 7 and update.button is None
    message = update.message
    assert (message.chat_id, message.message_id, message.text, message.thread_id) == (
        -100,
        3,
        "/status rig1",
        9,
    )
    assert (message.sender.id, message.sender.name) == (42, "ana")
    # A thread id outside a topic (a reply in a plain group) is no forum topic.
    raw["message"]["is_topic_message"] = False
    assert Update.read(raw).message.thread_id is None


def test_a_button_press_keeps_its_message_keyboard_and_its_chat():
    keyboard = {"inline_keyboard": [[{"text": "a", "callback_data": "s:1"}, {"url": "x"}], "?"]}
    press = Update.read(
        {
            "update_id": 1,
            "callback_query": {
                "id": "cb1",
                "data": "u:abc",
                "from": {"id": 5, "first_name": "Bo"},
                "message": {"message_id": 2, "chat": {"id": -7}, "reply_markup": keyboard},
            },
        }
    ).button
    assert (press.id, press.data, press.chat_id, press.sender.name) == ("cb1", "u:abc", -7, "Bo")
    assert press.message.keyboard == ((Button("a", "s:1"),),)  # a row that is no list: none
    # Too old a message: Telegram leaves it out; the press is the sender's own chat's.
    bare = Update.read({"update_id": 2, "callback_query": {"id": "cb2", "from": {"id": 5}}})
    assert bare.button.message is None and bare.button.chat_id == 5


def test_wrong_types_read_as_absent_and_an_update_without_an_id_is_dropped():
    assert Update.read({"message": {"chat": {"id": 1}, "text": "/help"}}) is None
    assert Update.read({"update_id": True}) is None  # a bool is no id
    assert Update.read("junk") is None
    odd = Update.read({"update_id": 3, "message": {"chat": {"id": "1"}, "text": "/help"}})
    assert odd is not None and odd.message is None  # no chat to answer in
    message = Message.read(
        {"chat": {"id": 1}, "text": 5, "from": "x", "message_id": "2", "migrate_to_chat_id": 1.5}
    )
    assert message == Message(1)


def test_odd_updates_are_confirmed_and_the_next_command_is_answered(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env) as (app, base):
        wait_until(lambda: telegram.calls_to("setMyCommands"), what="command menu")
        telegram.inject_update({"message": {"chat": {"id": "not a number"}, "text": "/help"}})
        telegram.inject_update({"message": {"chat": {"id": CHAT}, "text": ["/help"]}})
        telegram.inject_update({"callback_query": {"id": "cb", "data": 5}})
        last = telegram.inject_message(CHAT, "/help")
        wait_until(lambda: telegram.sent(CHAT), timeout=30, what="the answer to /help")
        wait_until(
            lambda: any(
                int(call.params.get("offset") or 0) > last
                for call in telegram.calls_to("getUpdates")
            ),
            timeout=30,
            what="every update confirmed",
        )
        assert len(telegram.sent(CHAT)) == 1
        assert "/status" in telegram.sent(CHAT)[0].params["text"]
