"""Resolved notices threaded to their firing message: the reply, the edit marking the firing
message resolved (one per packed storm message), across a restart, and when the message is gone."""

from __future__ import annotations

import json
import re

from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT, storm_notifications
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.support import wait_until


def _settled(app) -> None:
    wait_until(lambda: app.store.outbox.count("pending") == 0, timeout=60, what="outbox empty")


def _reply_to(call) -> int | None:
    if "reply_parameters" not in call.params:
        return None
    return json.loads(call.params["reply_parameters"])["message_id"]


def _message_id(call) -> int:
    return call.response["result"]["message_id"]


def _replied(call) -> int | None:
    """The message Telegram threaded this one under (None: sent plainly)."""
    return call.response["result"].get("reply_to_message", {}).get("message_id")


def test_resolved_replies_to_its_firing_message_which_is_edited(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: telegram.edits(CHAT), what="the firing message edited")
        _settled(app)
        firing, resolved = telegram.sent(CHAT)
        assert _replied(resolved) == _message_id(firing)
        assert parse_telegram_html(resolved.params["text"]).startswith("✅ RESOLVED")
        (edit,) = telegram.edits(CHAT)
        assert int(edit.params["message_id"]) == _message_id(firing)
        shown = telegram.message(CHAT, _message_id(firing))
        text = parse_telegram_html(shown.text)
        assert text.startswith("✅ RESOLVED · lasted 12m\n\n🟠 FIRING")
        # Its text is kept, but for the "(12d 4h ago)" true only when it was sent.
        sent = parse_telegram_html(firing.params["text"])
        ago = re.search(r" \(\d+d \d+h ago\)", sent)
        assert ago and " ago)" not in text, (sent, text)
        assert sent.replace(ago[0], "") in text
        assert shown.reply_markup is None  # nothing left to silence
        assert (
            botkit.metric_value(base, "rigwatch_bot_message_edits_total", {"result": "edited"}) == 1
        )


def test_a_refire_after_resolve_is_a_new_message(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        first, again = "2026-11-22T10:00:00Z", "2026-11-22T11:00:00Z"
        for body in (
            botkit.notification(botkit.alert(starts=first)),
            botkit.notification(botkit.alert(starts=first, status="resolved")),
            botkit.notification(botkit.alert(starts=again)),
            botkit.notification(
                botkit.alert(starts=again, status="resolved", ends="2026-11-22T11:05:00Z")
            ),
        ):
            assert botkit.post(base, body)[0] == 200
            _settled(app)
        fire1, resolve1, fire2, resolve2 = telegram.sent(CHAT)
        assert _replied(fire2) is None
        assert _replied(resolve1) == _message_id(fire1)
        assert _replied(resolve2) == _message_id(fire2)
        edited = [int(c.params["message_id"]) for c in telegram.edits(CHAT)]
        assert edited == [_message_id(fire1), _message_id(fire2)]
        second = parse_telegram_html(telegram.message(CHAT, _message_id(fire2)).text)
        assert second.startswith("✅ RESOLVED · lasted 5m\n")


def test_a_packed_storm_message_is_edited_once_all_its_alerts_resolved(tmp_path, telegram):
    settings = {"delivery": {"compact_after_alerts": 5}}
    with botkit.webhook_bot(tmp_path, telegram.url, settings) as (app, base):
        (storm,) = storm_notifications("s", groups=1, cards=12)
        assert botkit.post(base, storm)[0] == 200
        _settled(app)
        firing = telegram.sent(CHAT)
        assert len(firing) == 1  # twelve compact lines in one message
        half = [dict(a, status="resolved", endsAt="2026-11-22T10:30:00Z") for a in storm["alerts"]]
        assert botkit.post(base, botkit.notification(*half[:6], group_key="s-0"))[0] == 200
        _settled(app)
        assert telegram.edits(CHAT) == []  # six of twelve still firing
        assert _replied(telegram.sent(CHAT)[-1]) == _message_id(firing[0])
        assert botkit.post(base, botkit.notification(*half[6:], group_key="s-0"))[0] == 200
        wait_until(lambda: telegram.edits(CHAT), what="the storm message edited")
        _settled(app)
        (edit,) = telegram.edits(CHAT)
        assert int(edit.params["message_id"]) == _message_id(firing[0])
        text = parse_telegram_html(edit.params["text"])
        assert text.startswith("✅ ALL 12 RESOLVED · the longest lasted 30m\n\n")
        assert "s-0-11 " in text


def test_a_restart_between_fire_and_resolve_keeps_the_thread(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: telegram.edits(CHAT), what="the firing message edited")
        _settled(app)
    firing, resolved = telegram.sent(CHAT)
    assert _replied(resolved) == _message_id(firing)
    assert int(telegram.edits(CHAT)[0].params["message_id"]) == _message_id(firing)


def test_an_edit_queued_before_a_restart_is_made_after_it(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        # Telegram fails every edit for now: the edit stays queued when the bot stops.
        telegram.fail(500, "Internal Server Error", method="editMessageText", count=1000)
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) == 2, what="resolved notice sent")
        wait_until(
            lambda: telegram.calls_to("editMessageText", status=500), what="an edit attempted"
        )
    telegram.failures.clear()
    with botkit.running_bot(env, run_updates=False) as (app, base):
        wait_until(lambda: telegram.edits(CHAT), timeout=30, what="the edit after the restart")
        _settled(app)
    assert parse_telegram_html(telegram.edits(CHAT)[0].params["text"]).startswith("✅ RESOLVED")


def test_a_failing_edit_never_holds_back_the_next_message(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        telegram.fail(500, "Internal Server Error", method="editMessageText", count=1000)
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: telegram.calls_to("editMessageText", status=500), what="an edit failed")
        other = botkit.alert(name="DiskAlmostFull", gpu=None, summary="disk")
        assert botkit.post(base, botkit.notification(other, group_key="disk"))[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) == 3, timeout=5, what="next message sent")
        assert not telegram.edits(CHAT)  # the edit is still failing
        telegram.failures.clear()
        wait_until(lambda: telegram.edits(CHAT), timeout=30, what="the edit retried")


def test_original_message_gone_the_notice_goes_plainly_and_the_edit_is_dropped(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        (firing,) = telegram.sent(CHAT)
        telegram.delete_message(CHAT, _message_id(firing))
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(
            lambda: telegram.calls_to("editMessageText", status=400), what="the edit refused"
        )
        _settled(app)
        resolved = telegram.sent(CHAT)[1]
        assert _reply_to(resolved) == _message_id(firing)  # asked, Telegram sent it plainly
        assert _replied(resolved) is None
        refused = telegram.calls_to("editMessageText", status=400)
        assert len(refused) == 1  # not retried
        assert "message to edit not found" in refused[0].response["description"]
        assert (
            botkit.metric_value(base, "rigwatch_bot_message_edits_total", {"result": "given_up"})
            == 1
        )
        assert app.store.outbox.count("dead") == 1
        assert botkit.metric_value(base, "rigwatch_bot_dead_letters_total") == 0


def test_reply_not_found_is_sent_again_without_the_reply(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        telegram.fail(
            400,
            "Bad Request: message to reply not found",
            method="sendMessage",
            predicate=lambda params: "reply_parameters" in params,
        )
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) == 2, what="resolved notice sent")
        resolved = telegram.sent(CHAT)[1]
        assert "reply_parameters" not in resolved.params
        assert parse_telegram_html(resolved.params["text"]).startswith("✅ RESOLVED")
        assert botkit.metric_value(base, "rigwatch_bot_dead_letters_total") == 0


def test_each_forum_topic_threads_its_own_messages(tmp_path, telegram):
    from tests.alert_bot.botkit import GROUP

    routes = [
        {"match": {"rig": "rig1"}, "chat_id": GROUP, "message_thread_id": 7, "continue": True},
        {"match": {"rig": "rig1"}, "chat_id": GROUP, "message_thread_id": 8},
    ]
    env = botkit.bot_env(tmp_path, telegram.url, {"routes": routes})
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        _settled(app)
        assert botkit.post(base, botkit.notification(botkit.alert(status="resolved")))[0] == 200
        wait_until(lambda: len(telegram.edits(GROUP)) == 2, what="both topics' messages edited")
        _settled(app)
    by_topic: dict[str, list] = {}
    for call in telegram.sent(GROUP):
        by_topic.setdefault(call.params["message_thread_id"], []).append(call)
    assert sorted(by_topic) == ["7", "8"]
    for firing, resolved in by_topic.values():
        assert _replied(resolved) == _message_id(firing)
    edited = sorted(int(c.params["message_id"]) for c in telegram.edits(GROUP))
    assert edited == sorted(_message_id(calls[0]) for calls in by_topic.values())


def test_the_fake_checks_edits_like_telegram(telegram):
    """The fake is the oracle for edits: they must name a live message of the right kind,
    change something, and count against the flood limits like sends."""
    from telebot import types
    from telebot.apihelper import ApiTelegramException

    from alert_bot.telegram.client import TelegramClient, TelegramError, configure_api
    from tests.alert_bot.botkit import BOT_TOKEN
    from tests.alert_bot.fake_telegram import FloodRules

    telegram.flood = FloodRules(per_chat=(3, 60.0))
    configure_api(telegram.url, request_timeout=5)
    client = TelegramClient(BOT_TOKEN)
    text_id = client.send_message(CHAT, "<b>one</b>")
    photo_id = client.send_photo(CHAT, b"\x89PNG fake", "a chart")

    def refusal(call) -> str:
        try:
            call()
        except TelegramError as exc:
            return exc.description
        except ApiTelegramException as exc:  # a call made on the library directly
            return exc.description
        return ""

    assert "not modified" in refusal(lambda: client.edit_text(CHAT, text_id, "<b>one</b>"))
    assert "no text" in refusal(lambda: client.edit_text(CHAT, photo_id, "x"))
    client.bot.edit_message_caption("new caption", chat_id=CHAT, message_id=photo_id)
    assert telegram.message(CHAT, photo_id).text == "new caption"
    telegram.delete_message(CHAT, text_id)
    assert "message to edit not found" in refusal(lambda: client.edit_text(CHAT, text_id, "two"))
    # The reply to a deleted message: refused unless sending without it is allowed.
    gone = types.ReplyParameters(text_id)
    assert "message to reply not found" in refusal(
        lambda: client.bot.send_message(CHAT, "re", reply_parameters=gone)
    )
    # Three per chat in the window, sends and edits together: two sends and one edit so far.
    assert "Too Many Requests" in refusal(lambda: client.send_message(CHAT, "4"))


def test_an_edit_of_a_message_near_the_limit_still_fits():
    from alert_bot.delivery.threads import edit_payload
    from alert_bot.store.threads import ClosedMessage, FiringMessage
    from tests.alert_bot.fake_telegram import utf16_len

    long_html = "<b>" + "x" * 2000 + "</b>\n" + "🔥" * 1040  # 4081 units, as Telegram counts
    for as_html, text in ((True, long_html), (False, "y" * 4000 + "🔥" * 40)):
        closed = ClosedMessage(FiringMessage(CHAT, 5, None, text, as_html), 3, 125.0)
        payload = edit_payload(closed)
        shown = parse_telegram_html(payload["text"]) if as_html else payload["text"]
        assert shown.startswith("✅ ALL 3 RESOLVED · the longest lasted 2m 5s\n\n")
        assert utf16_len(shown) <= 4096
        assert shown.endswith("…")
