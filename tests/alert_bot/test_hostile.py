"""The bot under hostile conditions: Telegram answers it cannot understand, a slow chat, its
database deleted or failing under it, the token's secret half echoed back, and hostile HTTP."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from pathlib import Path

from alert_bot.telegram.client import TokenScrubber, scrub
from tests.alert_bot import botkit
from tests.alert_bot.botkit import BOT_TOKEN, CHAT, WEBHOOK_TOKEN
from tests.support import http_get, wait_until

SECRET = BOT_TOKEN.split(":", 1)[1]


def _routes(*pairs: tuple[str, int]) -> dict:
    return {"routes": [{"match": {"rig": rig}, "chat_id": chat} for rig, chat in pairs]}


def _to(chat: int):
    return lambda params: params.get("chat_id") == str(chat)


def test_answers_the_client_cannot_understand_fail_only_their_chat(tmp_path, telegram, caplog):
    """{"ok": false} without error_code, {"ok": true} without result, HTML from a proxy: the
    library raised KeyError/TypeError, the whole delivery pass was abandoned and retried about
    once a second, and a healthy chat's alert waited behind two such chats for over 95 s."""
    odd = {-11: "ok_false_no_code", -12: "ok_true_no_result", -13: "not_json", -14: None}
    odd[-14] = "result_not_a_message"
    env = botkit.bot_env(tmp_path, telegram.url, _routes(*[(f"odd{-c}", c) for c in odd]))
    with (
        caplog.at_level(logging.WARNING, logger="rigwatch"),
        botkit.running_bot(env, run_updates=False) as (app, base),
    ):
        for chat, kind in odd.items():
            telegram.malform(kind, count=3, predicate=_to(chat))
            assert (
                botkit.post(
                    base, botkit.notification(botkit.alert(rig=f"odd{-chat}"), group_key=kind)
                )[0]
                == 200
            )
        started = time.monotonic()
        assert (
            botkit.post(
                base, botkit.notification(botkit.alert(rig="healthy"), group_key="healthy")
            )[0]
            == 200
        )
        wait_until(lambda: telegram.sent(CHAT), timeout=10, what="the healthy chat's alert")
        assert time.monotonic() - started < 3
        # Each odd chat backs off and gets its alert once its answers make sense again.
        for chat in odd:
            wait_until(lambda c=chat: telegram.sent(c), timeout=30, what=f"chat {chat}")
            assert len(telegram.sent(chat)) == 1
        assert botkit.metric_value(
            base, "rigwatch_bot_delivery_failures_total", {"reason": "malformed"}
        ) == 3 * len(odd)
    assert not [r for r in caplog.records if r.exc_info]  # no tracebacks, only warnings


def test_a_slow_chat_does_not_hold_up_the_others(tmp_path, telegram):
    """One delivery thread: a chat whose answers took 40 s delayed every other chat."""
    slow, others = -21, [-30 - n for n in range(5)]
    env = botkit.bot_env(
        tmp_path, telegram.url, _routes(("slow", slow), *[(f"r{-c}", c) for c in others])
    )
    telegram.chat_delays[slow] = 6.0
    with botkit.running_bot(env, run_updates=False) as (app, base):

        def to_slow(n: int) -> None:
            body = botkit.notification(botkit.alert(rig="slow", gpu=str(n)), group_key=f"s{n}")
            assert botkit.post(base, body)[0] == 200

        # Three messages for the slow chat: its first send in flight, two more queued behind.
        to_slow(0)
        wait_until(
            lambda: any(c.params.get("chat_id") == str(slow) for c in telegram.arrived),
            timeout=10,
            what="the slow chat's first send in flight",
        )
        to_slow(1)
        to_slow(2)
        started = time.monotonic()
        for chat in others:
            assert (
                botkit.post(
                    base, botkit.notification(botkit.alert(rig=f"r{-chat}"), group_key=str(chat))
                )[0]
                == 200
            )
        wait_until(lambda: all(telegram.sent(c) for c in others), timeout=10, what="the others")
        assert time.monotonic() - started < 2.0  # the documented bound: not the slow chat's 6 s
        assert not telegram.sent(slow)
        # The slow chat still gets its messages, in order, one at a time.
        wait_until(lambda: len(telegram.sent(slow)) >= 2, timeout=30, what="the slow chat")
        gpus = [c.params["text"].split("GPU ", 1)[1][:1] for c in telegram.sent(slow)]
        assert gpus == sorted(gpus)


def test_a_deleted_or_replaced_database_is_503_and_unhealthy(tmp_path, telegram):
    """rm bot.db* under a running bot: webhooks kept getting 200 "stored" into the deleted file
    and /healthz stayed 200; a restart then lost every one of those alerts."""
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert(), group_key="before"))[0] == 200
        assert http_get(base + "/healthz")[0] == 200
        for path in tmp_path.glob("bot.db*"):
            path.unlink()
        status, text = botkit.post(
            base, botkit.notification(botkit.alert(gpu="1"), group_key="after")
        )
        assert status == 503, text
        assert http_get(base + "/healthz")[0] == 503
        # Replaced by another file of the same name: still not the file being written.
        replacement = sqlite3.connect(tmp_path / "bot.db")
        replacement.execute("CREATE TABLE t (x)")
        replacement.close()
        assert (
            botkit.post(base, botkit.notification(botkit.alert(gpu="2"), group_key="replaced"))[0]
            == 503
        )
        assert http_get(base + "/healthz")[0] == 503


class _FullDisk:
    """The connection with every write failing as SQLite reports a full disk."""

    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def execute(self, sql: str, *args):
        if sql.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "COMMIT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._connection, name)


def test_healthz_is_unhealthy_while_writes_fail_and_recovers(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        database = app.store.database
        real = database._connection
        database._connection = _FullDisk(real)
        try:
            assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 503
            assert http_get(base + "/healthz")[0] == 503
            assert http_get(base + "/healthz")[0] == 503  # the probe write fails too
        finally:
            database._connection = real
        assert http_get(base + "/healthz")[0] == 200  # the probe write succeeds: healthy
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        wait_until(lambda: telegram.sent(CHAT), what="delivery after recovery")


def test_the_token_and_its_secret_half_alone_are_scrubbed(tmp_path, telegram, caplog):
    """An error description echoing only the part after the colon was logged and stored."""
    assert SECRET not in scrub(f"bad token {SECRET} and {BOT_TOKEN}", BOT_TOKEN)
    assert "123456789" in scrub(BOT_TOKEN, BOT_TOKEN)  # the bot id is public and kept
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "echo %s", (SECRET,), None)
    TokenScrubber(BOT_TOKEN).filter(record)
    assert SECRET not in record.getMessage()

    env = botkit.bot_env(tmp_path, telegram.url)
    with (
        caplog.at_level(logging.DEBUG),
        botkit.running_bot(env, run_updates=False) as (app, base),
    ):
        for handler in logging.getLogger().handlers:
            handler.addFilter(TokenScrubber(BOT_TOKEN))
        # Retried (a 5xx), then delivered: the echoed secret in the retry's error.
        telegram.fail(502, f"Bad Gateway: token {SECRET} is not allowed here", count=2)
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        wait_until(lambda: telegram.sent(CHAT), timeout=20, what="delivery after the 502s")
        # Refused for good (the chat blocked the bot): the echo in the dead letter's error.
        telegram.fail(403, f"Forbidden: token {SECRET} is not allowed here", count=1)
        assert botkit.post(base, botkit.notification(botkit.alert(gpu="1")))[0] == 200
        wait_until(
            lambda: botkit.metric_value(base, "rigwatch_bot_dead_letters_total") == 1,
            timeout=20,
            what="the 403 dead-lettered",
        )
    logged = "\n".join(caplog.text.splitlines())
    assert SECRET not in logged
    stored = sqlite3.connect(Path(tmp_path) / "bot.db")
    errors = [str(r[0]) for r in stored.execute("SELECT last_error FROM notifications")]
    dead = [
        str(r[0])
        for r in stored.execute("SELECT last_error FROM notifications WHERE status = 'dead'")
    ]
    stored.close()
    assert len(dead) == 1 and "Forbidden" in dead[0], errors
    assert not any(SECRET in error for error in errors), errors


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_bot_http_refuses_http_0_9_and_ambiguous_lengths_and_survives_idle_floods(
    tmp_path, telegram
):
    env = botkit.bot_env(tmp_path, telegram.url, {"webhook": {"max_connections": 64}})
    with botkit.running_bot(env, run_updates=False) as (app, base):
        started = time.monotonic()
        assert _raw(app.port, b"GET /healthz\r\n").startswith(b"HTTP/1.1 400")
        assert time.monotonic() - started < 2
        auth = f"Authorization: Bearer {WEBHOOK_TOKEN}\r\n".encode()
        for lengths in (
            b"Content-Length: 2\r\nContent-Length: 40\r\n",
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        ):
            answer = _raw(
                app.port, b"POST /alertmanager HTTP/1.1\r\nHost: b\r\n" + auth + lengths + b"\r\n{}"
            )
            assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        assert app.store.outbox.count() == 0
        idle = [socket.create_connection(("127.0.0.1", app.port)) for _ in range(200)]
        try:
            for sock in idle[::2]:
                sock.sendall(b"POST /alertmanager HTTP/1.1\r\n")
            started = time.monotonic()
            assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
            assert time.monotonic() - started < 2
        finally:
            for sock in idle:
                sock.close()
        assert http_get(base + "/healthz")[0] == 200
