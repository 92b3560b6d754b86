"""The webhook: auth, size limit, payload validation, durable-before-2xx, HA duplicates, fuzz."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sqlite3
import string
import time
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alert_bot.alerts.model import Alert, Notification, parse_time
from alert_bot.alerts.webhook import parse_notification
from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT, WEBHOOK_TOKEN, Poster
from tests.support import REPO, http_get, wait_until


def test_a_notification_is_read_into_frozen_named_fields_and_stored_in_alertmanagers_shape():
    lost = botkit.alert(
        name="GpuLost",
        starts="2025-11-24T15:50:00.123456789Z",
        generator="http://prom:9090/graph?g0.expr=up",
        summary="GPU 0 is lost",
    )
    body = botkit.notification(dict(lost, extra="not kept"), group_key='{}:{alertname="GpuLost"}')
    notification = parse_notification(json.dumps(body).encode())
    (alert,) = notification.alerts
    assert (notification.status, notification.group_key, notification.receiver) == (
        "firing",
        body["groupKey"],
        "telegram",
    )
    assert (alert.alertname, alert.labels["gpu"]) == ("GpuLost", "0")
    assert alert.identity == lost["fingerprint"] and alert.starts_at == lost["startsAt"]
    assert alert.annotations["summary"] == "GPU 0 is lost"
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.status = "resolved"  # type: ignore[misc]
    with pytest.raises(TypeError):
        alert.labels["gpu"] = "1"  # type: ignore[index]
    # What the outbox stores (and templates and the delivery read) keeps Alertmanager's names.
    body.pop("version")
    body["alerts"] = [lost]
    assert notification.to_json() == body
    # ... and what the delivery reads back from the outbox is the same typed notification.
    assert Notification.from_json(notification.to_json()) == notification


def test_a_stored_row_missing_fields_reads_back_with_defaults():
    """A payload stored by an older release (or hand-edited) renders; it never stops delivery."""
    stored = {"status": "firing", "alerts": [{"labels": {"alertname": "Old", "n": 3}}, "junk"]}
    notification = Notification.from_json(stored)
    (alert,) = notification.alerts
    assert (alert.status, alert.alertname, alert.labels["n"], alert.starts_at) == (
        "firing",
        "Old",
        "3",
        "",
    )
    assert dict(alert.annotations) == {} and notification.external_url == ""
    assert Alert.from_json({}).status == "firing"


def test_wrong_or_missing_token_is_401_and_stores_nothing(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        payload = botkit.notification(botkit.alert())
        assert botkit.post(base, payload, token=None)[0] == 401
        assert botkit.post(base, payload, token="webhook-secreT")[0] == 401
        assert botkit.post(base, payload, token="")[0] == 401
        status, _ = botkit.post(base, json.dumps(payload).encode(), token="webhook-secret-and-more")
        assert status == 401
        assert app.store.outbox.count() == 0
        assert (
            botkit.metric_value(
                base, "rigwatch_bot_notifications_rejected_total", {"reason": "unauthorized"}
            )
            == 4
        )
    assert telegram.sent() == []


def test_a_client_that_stops_sending_is_disconnected(tmp_path, telegram):
    """A request whose body never comes held a server thread forever (no socket timeout),
    so slow or stuck clients could pile up threads without bound."""
    env = botkit.bot_env(tmp_path, telegram.url, {"webhook": {"read_timeout": "1s"}})
    with botkit.running_bot(env, run_updates=False) as (app, base):
        stuck = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        try:
            stuck.sendall(
                b"POST /alertmanager HTTP/1.1\r\nHost: bot\r\n"
                + f"Authorization: Bearer {WEBHOOK_TOKEN}\r\n".encode()
                + b'Content-Length: 500\r\n\r\n{"version": '
            )
            started = time.monotonic()
            assert stuck.recv(4096) == b""  # the server closed it, with no answer
            assert time.monotonic() - started < 5
        finally:
            stuck.close()
        assert app.store.outbox.count() == 0
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200


def test_body_over_the_limit_is_413(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url, {"webhook": {"max_body_bytes": 4096}})
    with botkit.running_bot(env, run_updates=False) as (app, base):
        big = botkit.notification(botkit.alert(description="x" * 5000))
        status, text = botkit.post(base, big)
        assert status == 413
        assert "4096" in text
        assert app.store.outbox.count() == 0
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200


def test_malformed_payloads_are_400_with_a_reason(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        good = botkit.notification(botkit.alert())
        cases = {
            b"{not json": "not valid JSON",
            b"[1, 2]": "JSON object",
            json.dumps({**good, "version": "3"}).encode(): 'version must be "4"',
            json.dumps({**good, "status": "burning"}).encode(): "status must be firing or resolved",
            json.dumps({**good, "alerts": []}).encode(): "alerts must be a non-empty list",
            json.dumps({**good, "groupKey": 5}).encode(): "groupKey must be a string",
            json.dumps(
                {**good, "alerts": [{**good["alerts"][0], "labels": {"alertname": "X", "n": 1}}]}
            ).encode(): "alerts[0].labels.n must be a string",
            json.dumps(
                {**good, "alerts": [{**good["alerts"][0], "startsAt": "yesterday"}]}
            ).encode(): "alerts[0].startsAt is not an RFC 3339 time",
        }
        for body, reason in cases.items():
            status, text = botkit.post(base, body)
            assert status == 400, body
            assert reason in text, (reason, text)
        assert app.store.outbox.count() == 0


def test_json_that_breaks_the_decoder_or_the_store_is_400_not_500(tmp_path, telegram):
    """Valid-looking JSON whose nesting exhausts the decoder's recursion, or whose strings hold
    lone UTF-16 surrogates (JSON allows the escape; UTF-8, SQLite and Telegram do not)."""
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        good = botkit.notification(botkit.alert())
        deep = b'{"version": "4", "alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, text = botkit.post(base, deep)
        assert status == 400, text
        assert "nested too deeply" in text
        surrogate = json.dumps(good).replace("GPU 0 is at", "GPU 0 \\ud800 is at").encode()
        assert b"\\ud800" in surrogate
        status, text = botkit.post(base, surrogate)
        assert status == 400, text
        assert "alerts[0].annotations.summary" in text and "surrogate" in text
        lone_key = json.dumps(good).replace('"rig":', '"r\\udc00ig":').encode()
        status, text = botkit.post(base, lone_key)
        assert status == 400, text
        assert app.store.outbox.count() == 0
        assert (
            botkit.metric_value(
                base, "rigwatch_bot_notifications_rejected_total", {"reason": "bad_payload"}
            )
            == 3
        )


def test_odd_but_valid_payloads_are_stored_and_delivered(tmp_path, telegram):
    """Semantically odd v4 payloads: hundreds of labels, an alert name longer than a message,
    an empty-string label name. Stored (2xx) and delivered, never 5xx, never stuck."""
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        many_labels = botkit.alert(**{f"label_{n}": "x" * 20 for n in range(2000)})
        assert botkit.post(base, botkit.notification(many_labels))[0] == 200
        long_name = botkit.alert(name="N" * 6000, description="d" * 5000)
        status, _ = botkit.post(base, botkit.notification(long_name, group_key="{}:{long}"))
        assert status == 200
        empty_key = botkit.alert(gpu="7", **{"": "empty"})
        assert botkit.post(base, botkit.notification(empty_key, group_key="{}:{empty}"))[0] == 200
        wait_until(lambda: app.store.outbox.count("pending") == 0, what="all delivered", timeout=30)
        assert app.store.outbox.count("dead") == 0
        texts = telegram.visible_texts(CHAT)
        assert any("label_" not in t and "GpuTooHot" in t for t in texts)
        assert sum(t.count("N" * 100) > 0 for t in texts) >= 2  # the long one, in parts


def test_a_2xx_means_the_notification_is_on_disk(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        telegram.go_down(30)  # nothing gets delivered: the row stays pending
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        # A separate connection to the file sees the committed row right after the answer.
        db = sqlite3.connect(tmp_path / "bot.db")
        rows = db.execute("SELECT chat_id, status, payload FROM notifications").fetchall()
        db.close()
        assert len(rows) == 1
        assert rows[0][0] == CHAT
        assert json.loads(rows[0][2])["alerts"][0]["labels"]["alertname"] == "GpuTooHot"
        telegram.down_until = 0


def test_store_failure_answers_5xx_and_alertmanager_retry_then_succeeds(tmp_path, telegram):
    env = botkit.bot_env(tmp_path, telegram.url)
    with botkit.running_bot(env, run_updates=False) as (app, base):
        # Another process holding the database's write lock makes every write fail.
        app.store.database._connection.execute("PRAGMA busy_timeout=200")
        blocker = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, text = botkit.post(base, botkit.notification(botkit.alert()))
            assert status == 503
            assert "retry" in text
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert app.store.outbox.count() == 0
        assert botkit.metric_value(base, "rigwatch_bot_notifications_received_total") == 0
        assert botkit.metric_value(base, "rigwatch_bot_notifications_stored_total") == 0
        # Alertmanager's retry of the same notification now lands and is delivered.
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        wait_until(lambda: len(telegram.sent(CHAT)) == 1, what="delivery after retry")


def test_duplicates_from_an_ha_pair_are_stored_once(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        first = botkit.notification(botkit.alert(gpu="0"), botkit.alert(gpu="1"))
        # The peer's copy: same group, alerts and states; order and firing endsAt differ.
        twin = json.loads(json.dumps(first))
        twin["alerts"].reverse()
        for item in twin["alerts"]:
            item["endsAt"] = "2026-11-22T10:20:00Z"
        assert botkit.post(base, first)[0] == 200
        assert botkit.post(base, twin)[0] == 200
        resolved = botkit.notification(
            botkit.alert(gpu="0", status="resolved"), botkit.alert(gpu="1", status="resolved")
        )
        assert botkit.post(base, resolved)[0] == 200
        assert botkit.post(base, resolved)[0] == 200
        # Stored: two notifications (the edit marking the firing message resolved comes later).
        stored = "SELECT COUNT(*) AS n FROM notifications WHERE kind != 'edit'"
        assert app.store.database.query(stored)[0]["n"] == 2
        assert botkit.metric_value(base, "rigwatch_bot_notifications_duplicate_total") == 2
        # Every notification answered 2xx is received; duplicates are not stored again.
        assert botkit.metric_value(base, "rigwatch_bot_notifications_received_total") == 4
        assert botkit.metric_value(base, "rigwatch_bot_notifications_stored_total") == 2
        # Both delivered, and the firing message edited once the resolved notice went out.
        wait_until(lambda: app.store.outbox.count("sent") == 3, what="both delivered")
        texts = "\n".join(telegram.visible_texts(CHAT))
        assert texts.count("FIRING") == 2  # two alerts of the one firing notification
        assert texts.count("RESOLVED") == 2


def test_healthz_metrics_and_landing_page(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        with urllib.request.urlopen(base + "/healthz") as response:
            assert response.status == 200
        with urllib.request.urlopen(base + "/") as response:
            assert b"/alertmanager" in response.read()
        assert botkit.metric_value(base, "rigwatch_bot_build_info") == 1
        assert botkit.metric_value(base, "rigwatch_bot_queue_depth") == 0
        assert botkit.post(base, botkit.notification(botkit.alert()), path="/elsewhere")[0] == 404
        # Every metric docs/bot-metrics.md promises is on /metrics from the start.
        documented = re.findall(
            r"^\| (rigwatch_bot_\w+) \|", (REPO / "docs" / "bot-metrics.md").read_text(), re.M
        )
        assert len(documented) >= 16
        _, exposition = http_get(base + "/metrics")
        exposed = set(re.findall(r"^# TYPE (\w+) ", exposition, re.M))
        exposed |= {f"{name}_total" for name in exposed}
        assert sorted(set(documented) - exposed) == []


# --- fuzz -----------------------------------------------------------------------------------

# \ud800: JSON can carry a lone surrogate, which no UTF-8 store or Telegram can take.
label_text = st.text(alphabet=string.printable + "<>&ЖЁ🔥\u0000\ud800", max_size=12)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), label_text
)
json_any = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(label_text, inner, max_size=3)
    ),
    max_leaves=8,
)


def _is_time(value: object) -> bool:
    try:
        parse_time(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


# For each field, values it must never accept; None means "leave the field out".
NOT_VALID = {
    "version": lambda v: v != "4",
    "status": lambda v: v not in ("firing", "resolved"),
    "groupKey": lambda v: not isinstance(v, str) or not v,
    "alerts": lambda v: True,
    "receiver": lambda v: v is not None and not isinstance(v, str),
    "externalURL": lambda v: v is not None and not isinstance(v, str),
    "groupLabels": lambda v: v is not None and not _string_map(v),
    "commonLabels": lambda v: v is not None and not _string_map(v),
    "commonAnnotations": lambda v: v is not None and not _string_map(v),
    "truncatedAlerts": lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "alerts.0.status": lambda v: v not in ("firing", "resolved"),
    "alerts.0.labels": lambda v: not (_string_map(v) and v.get("alertname")),
    "alerts.0.annotations": lambda v: v is not None and not _string_map(v),
    "alerts.0.startsAt": lambda v: not (isinstance(v, str) and _is_time(v)),
    "alerts.0.endsAt": lambda v: (
        v is not None and not (isinstance(v, str) and (not v or _is_time(v)))
    ),
    "alerts.0.generatorURL": lambda v: v is not None and not isinstance(v, str),
    "alerts.0.fingerprint": lambda v: v is not None and not isinstance(v, str),
}


REQUIRED = {"version", "status", "groupKey", "alerts", "labels", "startsAt"}


@st.composite
def one_field_broken(draw):
    payload = botkit.notification(botkit.alert(), botkit.alert(gpu="1"))
    where = draw(st.sampled_from(sorted(NOT_VALID)))
    replacement = draw(json_any.filter(NOT_VALID[where]))
    target, key = payload, where
    if where.startswith("alerts.0."):
        target, key = payload["alerts"][draw(st.sampled_from([0, 1]))], where.split(".", 2)[2]
    if replacement is None and key in REQUIRED and draw(st.booleans()):
        target.pop(key)  # a required field left out rather than null
    else:
        target[key] = replacement
    return json.dumps(payload).encode()


def malformed_bodies():
    return st.one_of(
        one_field_broken(),
        st.binary(max_size=64),
        json_any.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    )


def test_fuzzed_payloads_get_4xx_never_5xx_and_store_nothing(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        statuses: dict[int, int] = {}
        poster = Poster(base)

        @settings(
            max_examples=2000,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(malformed_bodies())
        def check(body: bytes) -> None:
            status, _ = poster.post(body)
            statuses[status] = statuses.get(status, 0) + 1
            assert 400 <= status < 500, (status, body[:200])

        check()
        poster.close()
        assert sum(statuses.values()) >= 2000
        assert app.store.outbox.count() == 0
        # The bot is still fine afterwards.
        assert botkit.post(base, botkit.notification(botkit.alert()))[0] == 200
        wait_until(lambda: telegram.sent(CHAT), what="a real notification after the fuzzing")
