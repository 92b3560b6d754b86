"""Delivery to the fake Telegram: message content, escaping, long alerts, storms, outages,
429/5xx/400 handling, dead letters, chat migration, routes and topics, user templates."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.alert_bot import botkit
from tests.alert_bot.botkit import CHAT, GROUP, storm_notifications
from tests.alert_bot.fake_telegram import parse_telegram_html, utf16_len
from tests.support import wait_until


def _all_visible(telegram, chat=CHAT) -> str:
    return "\n".join(telegram.visible_texts(chat))


def test_every_status_and_severity(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        severities = {"critical": "🔴", "warning": "🟠", "info": "🔵", "none": "⚪"}
        for severity in severities:
            one = botkit.alert(
                name=f"Test{severity.title()}", severity=severity, summary=f"s-{severity}"
            )
            assert botkit.post(base, botkit.notification(one, group_key=f"g-{severity}"))[0] == 200
            wait_until(lambda: app.store.outbox.count("pending") == 0, what="delivered")
            gone = botkit.alert(
                name=f"Test{severity.title()}",
                severity=severity,
                status="resolved",
                summary=f"s-{severity}",
            )
            assert botkit.post(base, botkit.notification(gone, group_key=f"g-{severity}"))[0] == 200
            wait_until(lambda: app.store.outbox.count("pending") == 0, what="delivered")
        sent = telegram.sent(CHAT)
        assert len(sent) == 8
        for number, (severity, marker) in enumerate(severities.items()):
            firing, resolved = sent[2 * number], sent[2 * number + 1]
            firing_text = parse_telegram_html(firing.params["text"])
            assert firing_text.startswith(f"{marker} FIRING")
            assert f"Test{severity.title()}" in firing_text
            assert f"s-{severity}" in firing_text
            assert "rig rig1 · GPU 0" in firing_text
            assert "since 2026-11-22 10:00 UTC" in firing_text
            assert "silence in Alertmanager" in firing_text
            buttons = json.loads(firing.params["reply_markup"])["inline_keyboard"][0]
            assert [b["text"] for b in buttons] == ["🔕 1h", "🔕 4h", "🔕 24h"]
            resolved_text = parse_telegram_html(resolved.params["text"])
            assert resolved_text.startswith("✅ RESOLVED")
            assert "lasted 12m" in resolved_text
            assert "reply_markup" not in resolved.params  # nothing to silence any more
        # Links: Grafana's dashboard and Alertmanager's silence form for the alert's labels.
        html_text = sent[0].params["text"]
        assert (
            'href="http://grafana.example:3000/d/rigwatch-gpu?var-rig=rig1&amp;var-gpu=0'
            in html_text
        )
        assert "http://alertmanager.example:9093/#/silences/new?filter=" in html_text
        assert botkit.metric_value(base, "rigwatch_bot_messages_delivered_total") == 8
        assert botkit.metric_value(base, "rigwatch_bot_alerts_delivered_total") == 8
        assert botkit.metric_value(base, "rigwatch_bot_delivery_latency_seconds_count") == 8


def test_labels_full_of_markup_characters_emoji_and_cyrillic(tmp_path, telegram):
    nasty = "<b>x</b> & <script>*bold* _it_ `code` [link](x) 🔥🧊 Привет, мир &amp; </i>"
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        one = botkit.alert(
            name="Disk<&>_*Full",
            rig="рига-1 <main> & co",
            summary=nasty,
            description="desc " + nasty,
            mountpoint="/mnt/<data>&_*",
        )
        assert botkit.post(base, botkit.notification(one))[0] == 200
        wait_until(lambda: telegram.sent(CHAT), what="delivery")
        call = telegram.sent(CHAT)[0]
        assert call.params["parse_mode"] == "HTML"
        visible = parse_telegram_html(call.params["text"])  # what Telegram would show
        assert "Disk<&>_*Full" in visible
        assert "рига-1 <main> & co" in visible
        assert nasty in visible
        assert "desc " + nasty in visible
        assert telegram.count_status(400) == 0


def test_an_alert_longer_than_a_message_arrives_whole_in_several(tmp_path, telegram):
    words = " ".join(f"word{i}<&>ё🔥" for i in range(1000))  # ~10000 characters
    assert len(words) > 3 * 4096 // 2
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert (
            botkit.post(
                base, botkit.notification(botkit.alert(severity="critical", description=words))
            )[0]
            == 200
        )
        wait_until(lambda: app.store.outbox.count("sent") == 1, timeout=30, what="delivery")
        sent = telegram.sent(CHAT)
        assert len(sent) >= 3
        visible = [parse_telegram_html(c.params["text"]) for c in sent]
        assert all(utf16_len(v) <= 4096 for v in visible)
        assert telegram.count_status(400) == 0
        joined = visible[0] + "".join(v.split("\n", 1)[1] for v in visible[1:])
        assert words in joined  # every character, in order
        assert all(v.startswith("(continued: GpuTooHot)") for v in visible[1:])


def test_an_enormous_alert_is_cut_with_a_visible_note(tmp_path, telegram):
    huge = "y" * 60000
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert(description=huge)))[0] == 200
        wait_until(lambda: app.store.outbox.count("sent") == 1, timeout=30, what="delivery")
        visible = telegram.visible_texts(CHAT)
        assert len(visible) == 4  # delivery.max_parts_per_alert
        assert visible[-1].endswith("…(truncated)")
        assert visible[0].startswith("🟠 FIRING")


def test_a_storm_of_500_alerts_arrives_in_few_messages_without_429(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        started = time.monotonic()
        for body in storm_notifications("card"):
            assert botkit.post(base, body)[0] == 200
        wait_until(
            lambda: app.store.outbox.count("sent") == 50,
            timeout=90,
            interval=0.5,
            what="storm delivered",
        )
        elapsed = time.monotonic() - started
        text = _all_visible(telegram)
        missing = [
            f"card-{g}-{c} " for g in range(50) for c in range(10) if f"card-{g}-{c} " not in text
        ]
        assert not missing
        messages = len(telegram.sent(CHAT))
        assert 5 <= messages <= 40, messages
        assert telegram.count_status(429) == 0
        assert elapsed < 60, elapsed
        assert botkit.metric_value(base, "rigwatch_bot_alerts_delivered_total") == 500
        assert botkit.metric_value(base, "rigwatch_bot_telegram_rate_limited_total") == 0


def test_telegram_down_then_up_everything_arrives_once(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        outage_s = 6  # "a minute", shortened; backoff_max is 2 s in tests
        back_at = time.time() + outage_s
        telegram.go_down(outage_s)
        for number in range(12):
            body = botkit.notification(
                botkit.alert(summary=f"outage-{number}-end"), group_key=f"o{number}"
            )
            assert botkit.post(base, body)[0] == 200
        # All twelve wait in the queue while the bot's tries fail.
        wait_until(
            lambda: (
                telegram.calls_to("(down)", status=0)
                and botkit.metric_value(base, "rigwatch_bot_queue_depth") == 12
                and botkit.metric_value(base, "rigwatch_bot_queue_oldest_age_seconds") >= 1
            ),
            timeout=outage_s,
            what="twelve queued, a second old, tries failing",
        )
        wait_until(
            lambda: app.store.outbox.count("sent") == 12, timeout=30, what="after the outage"
        )
        assert [c for c in telegram.sent() if c.at < back_at] == []  # nothing got through
        text = _all_visible(telegram)
        for number in range(12):
            assert text.count(f"outage-{number}-end") == 1
        assert (
            botkit.metric_value(base, "rigwatch_bot_delivery_failures_total", {"reason": "network"})
            >= 2
        )
        assert botkit.metric_value(base, "rigwatch_bot_delivery_retries_total") >= 1
        assert botkit.metric_value(base, "rigwatch_bot_queue_depth") == 0


def test_429_holds_back_only_that_chat_and_5xx_is_retried(tmp_path, telegram):
    routes = {
        "routes": [
            {"match": {"rig": "group-rig"}, "chat_id": GROUP, "message_thread_id": 7},
        ]
    }
    with botkit.webhook_bot(tmp_path, telegram.url, routes) as (app, base):
        telegram.fail(
            429,
            "Too Many Requests: retry after 3",
            retry_after=3,
            predicate=lambda p: p.get("chat_id") == str(GROUP),
        )
        assert (
            botkit.post(base, botkit.notification(botkit.alert(rig="group-rig"), group_key="a"))[0]
            == 200
        )
        wait_until(lambda: telegram.count_status(429) == 1, what="the 429")
        refused_at = time.time()
        assert (
            botkit.post(base, botkit.notification(botkit.alert(rig="home"), group_key="b"))[0]
            == 200
        )
        wait_until(lambda: telegram.sent(CHAT), timeout=5, what="other chat unaffected")
        assert time.time() - refused_at < 2.5  # not held back by the group's retry_after
        wait_until(lambda: telegram.sent(GROUP), timeout=10, what="group after retry_after")
        group_call = telegram.sent(GROUP)[0]
        assert group_call.at - refused_at >= 2.5
        assert group_call.params["message_thread_id"] == "7"
        assert botkit.metric_value(base, "rigwatch_bot_telegram_rate_limited_total") == 1

        # A Telegram 5xx is not the message's fault: it is kept, retried and delivered once.
        # (A 403, the chat refusing the bot, is dead-lettered and reported elsewhere:
        # test_start_chats.py.)
        for status, description, reason, key in ((500, "Internal Server Error", "5xx", "c"),):
            telegram.fail(status, description, count=2)
            summary = f"after-{reason}"
            body = botkit.notification(botkit.alert(summary=summary), group_key=key)
            assert botkit.post(base, body)[0] == 200
            wait_until(
                lambda s=summary: s in _all_visible(telegram), timeout=15, what=f"{reason} retried"
            )
            failures = {"reason": reason}
            assert botkit.metric_value(base, "rigwatch_bot_delivery_failures_total", failures) == 2
            assert app.store.outbox.count("dead") == 0
            assert _all_visible(telegram).count(summary) == 1


def test_rejected_html_falls_back_to_plain_text(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        telegram.fail(
            400,
            "Bad Request: can't parse entities: unsupported start tag",
            predicate=lambda p: p.get("parse_mode") == "HTML",
        )
        assert (
            botkit.post(base, botkit.notification(botkit.alert(summary="plain <fallback> & ok")))[0]
            == 200
        )
        wait_until(lambda: telegram.sent(CHAT), what="plain text delivery")
        call = telegram.sent(CHAT)[0]
        assert "parse_mode" not in call.params
        assert "plain <fallback> & ok" in call.params["text"]
        assert "<b>" not in call.params["text"]
        assert app.store.outbox.count("sent") == 1
        assert (
            botkit.metric_value(base, "rigwatch_bot_delivery_failures_total", {"reason": "400"})
            == 1
        )


def test_a_request_too_large_for_the_server_falls_back_to_plain_text(tmp_path, telegram):
    """A link longer than a request line may be (414 URI Too Long, as the Bot API's query
    string carries the text) is the message's fault like a 400: retrying it forever would
    block the chat; the plain-text fallback leaves the link out and goes through."""
    template = '<a href="{{ generator_url }}">{{ alertname }}</a>: {{ summary }}'
    huge_link = "http://prometheus.example/graph?g0.expr=" + "x" * 70_000
    with botkit.running_bot(
        botkit.bot_env(tmp_path, telegram.url, {"template": template}), run_updates=False
    ) as (app, base):
        body = botkit.notification(botkit.alert(summary="link-too-long", generator=huge_link))
        assert botkit.post(base, body)[0] == 200
        wait_until(lambda: app.store.outbox.count("pending") == 0, timeout=15, what="delivered")
        assert app.store.outbox.count("sent") == 1
        call = telegram.sent(CHAT)[0]
        assert "parse_mode" not in call.params
        assert call.params["text"] == "GpuTooHot: link-too-long"


def test_what_telegram_refuses_twice_is_dead_lettered_and_reported(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        telegram.fail(
            400, "Bad Request: chat not writable", count=100, predicate=lambda p: "poison" in str(p)
        )
        telegram.go_down(1.0)  # both notifications wait, so they are packed into one message
        assert (
            botkit.post(
                base, botkit.notification(botkit.alert(summary="fine-one"), group_key="ok")
            )[0]
            == 200
        )
        body = botkit.notification(
            botkit.alert(name="PoisonAlert", summary="poison pill"), group_key="bad"
        )
        assert botkit.post(base, body)[0] == 200
        wait_until(lambda: app.store.outbox.count("pending") == 0, timeout=20, what="queue drained")
        assert app.store.outbox.count("dead") == 1
        assert "fine-one" in _all_visible(telegram)
        report = [t for t in telegram.visible_texts(CHAT) if "could not be delivered" in t]
        assert len(report) == 1
        assert "PoisonAlert" in report[0]
        assert "chat not writable" in report[0]
        letters = (
            sqlite3.connect(tmp_path / "bot.db")
            .execute("SELECT chat_id, text, error FROM dead_letters")
            .fetchall()
        )
        assert len(letters) == 1
        assert letters[0][0] == CHAT
        assert "poison pill" in letters[0][1]
        assert botkit.metric_value(base, "rigwatch_bot_dead_letters_total") == 1


def test_a_group_upgraded_to_a_supergroup_is_followed(tmp_path, telegram):
    old_group, new_group = -4242, -1004242
    routes = {"routes": [{"match": {"rig": "shared"}, "chat_id": old_group}]}
    with botkit.webhook_bot(tmp_path, telegram.url, routes) as (app, base):
        telegram.migrate(old_group, new_group)
        first = botkit.notification(botkit.alert(rig="shared", summary="first"), group_key="1")
        assert botkit.post(base, first)[0] == 200
        wait_until(lambda: telegram.sent(new_group), what="delivery to the supergroup")
        second = botkit.notification(botkit.alert(rig="shared", summary="second"), group_key="2")
        assert botkit.post(base, second)[0] == 200
        wait_until(lambda: len(telegram.sent(new_group)) == 2, what="second delivery")
        # The old id is asked once; afterwards the bot writes to the new id directly.
        assert len(telegram.calls_to("sendMessage", status=400)) == 1
        assert "first" in _all_visible(telegram, new_group)
        assert "second" in _all_visible(telegram, new_group)


def test_a_migration_announced_in_an_update_is_followed(tmp_path, telegram):
    old_group, new_group = -777, -100777
    routes = {"routes": [{"match": {"rig": "moved"}, "chat_id": old_group}]}
    with botkit.running_bot(botkit.bot_env(tmp_path, telegram.url, routes)) as (app, base):
        telegram.inject_message(old_group, "", migrate_to_chat_id=new_group)
        wait_until(lambda: app.store.migrations.resolve(old_group) == new_group, what="migration")
        assert (
            botkit.post(base, botkit.notification(botkit.alert(rig="moved", summary="after-move")))[
                0
            ]
            == 200
        )
        wait_until(lambda: telegram.sent(new_group), what="delivery to the new id")
        assert telegram.calls_to("sendMessage", status=400) == []
        assert telegram.sent(old_group) == []


def test_routes_split_one_notification_between_chats(tmp_path, telegram):
    routes = {"routes": [{"match_re": {"severity": "crit.*"}, "chat_id": GROUP, "continue": True}]}
    with botkit.webhook_bot(tmp_path, telegram.url, routes) as (app, base):
        both = botkit.notification(
            botkit.alert(severity="critical", gpu="0", summary="hot-0"),
            botkit.alert(severity="warning", gpu="1", summary="warm-1"),
        )
        assert botkit.post(base, both)[0] == 200
        wait_until(lambda: app.store.outbox.count("sent") == 2, what="both destinations")
        assert "hot-0" in _all_visible(telegram, GROUP)
        assert "warm-1" not in _all_visible(telegram, GROUP)
        assert "warm-1" in _all_visible(telegram, CHAT)  # no route matched: default chat
        assert botkit.metric_value(base, "rigwatch_bot_notifications_received_total") == 1
        assert botkit.metric_value(base, "rigwatch_bot_notifications_stored_total") == 2


def test_user_template_is_autoescaped(tmp_path, telegram):
    template = (
        "{{ marker }} <b>{{ alertname }}</b> on {{ rig }}{% if gpu %} GPU {{ gpu }}{% endif %}:"
        " {{ summary }} ({{ status }}, {{ labels.severity }})"
    )
    with botkit.running_bot(
        botkit.bot_env(tmp_path, telegram.url, {"template": template}), run_updates=False
    ) as (app, base):
        assert (
            botkit.post(base, botkit.notification(botkit.alert(summary="<i>too</i> hot & loud")))[0]
            == 200
        )
        wait_until(lambda: telegram.sent(CHAT), what="delivery")
        text = telegram.sent(CHAT)[0].params["text"]
        assert text == (
            "🟠 <b>GpuTooHot</b> on rig1 GPU 0: &lt;i&gt;too&lt;/i&gt; hot &amp; loud"
            " (firing, warning)"
        )


def test_the_shipped_example_template_file_works(tmp_path, telegram):
    from tests.support import REPO

    template = str(REPO / "alert_bot" / "templates" / "short.html.j2")
    env = botkit.bot_env(tmp_path, telegram.url, {"template_file": template})
    with botkit.running_bot(env, run_updates=False) as (app, base):
        assert botkit.post(base, botkit.notification(botkit.alert(summary="a <b> c")))[0] == 200
        wait_until(lambda: telegram.sent(CHAT), what="delivery")
        assert telegram.visible_texts(CHAT)[0] == "🟠 GpuTooHot · rig1 · GPU 0\na <b> c\ndashboard"


def test_messages_never_exceed_the_limit_when_packing(tmp_path, telegram):
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        telegram.go_down(1.5)
        for number in range(20):
            text = f"pack-{number}-" + "Ж🔥<&>" * (20 + 53 * number % 150)
            body = botkit.notification(botkit.alert(summary=text), group_key=f"p{number}")
            assert botkit.post(base, body)[0] == 200
        wait_until(lambda: app.store.outbox.count("sent") == 20, timeout=40, what="all packed")
        visible = telegram.visible_texts(CHAT)
        assert len(visible) < 20
        assert all(utf16_len(v) <= 4096 for v in visible)
        assert all(re.search(rf"pack-{n}-", "\n".join(visible)) for n in range(20))
        assert telegram.count_status(400) == 0


def test_progress_recorded_for_a_longer_rendering_still_completes(tmp_path, telegram):
    # A long alert half sent, then rendered shorter (a backlog switched to one line per alert):
    # its last part goes out and the notification completes instead of waiting forever.
    with botkit.webhook_bot(tmp_path, telegram.url) as (app, base):
        telegram.go_down(1.0)
        assert botkit.post(base, botkit.notification(botkit.alert(summary="short-now")))[0] == 200
        db = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
        db.execute("UPDATE notifications SET parts_done = 3")
        db.close()
        wait_until(lambda: app.store.outbox.count("sent") == 1, timeout=15, what="completed")
        assert "short-now" in _all_visible(telegram)


class _HangingPrometheus(BaseHTTPRequestHandler):
    """Answers every query only after a long pause, like an overloaded Prometheus."""

    def do_GET(self) -> None:
        self.server.queries += 1  # type: ignore[attr-defined]
        time.sleep(3)  # the slowness this stand-in exists to show, not a wait
        self.server.answered += 1  # type: ignore[attr-defined]
        body = b'{"status": "success", "data": {"resultType": "matrix", "result": []}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


def test_a_slow_prometheus_delays_no_text_only_the_chart(tmp_path, telegram):
    """Charts were drawn on the delivery thread: with Prometheus slow to answer, every message
    after a critical alert's waited for its chart queries (up to charts.timeout each)."""
    prometheus = ThreadingHTTPServer(("127.0.0.1", 0), _HangingPrometheus)
    prometheus.queries = prometheus.answered = 0  # type: ignore[attr-defined]
    threading.Thread(target=prometheus.serve_forever, daemon=True).start()
    try:
        env = botkit.bot_env(
            tmp_path,
            telegram.url,
            {"charts": {"timeout": "10s"}},
            prometheus=f"http://127.0.0.1:{prometheus.server_address[1]}",
        )
        with botkit.running_bot(env, run_updates=False) as (app, base):
            generator = "http://prom:9090/graph?g0.expr=rigwatch_gpu_temperature_celsius+%3E+90"
            critical = botkit.alert(severity="critical", summary="chart-me", generator=generator)
            assert botkit.post(base, botkit.notification(critical, group_key="critical"))[0] == 200
            wait_until(lambda: "chart-me" in _all_visible(telegram), what="critical text")
            wait_until(lambda: prometheus.queries > 0, what="chart query started")
            later = botkit.alert(name="DiskFull", gpu=None, summary="right-after")
            assert botkit.post(base, botkit.notification(later, group_key="later"))[0] == 200
            wait_until(lambda: "right-after" in _all_visible(telegram), what="next text")
            assert prometheus.answered == 0  # it went out while the chart query still hung
    finally:
        prometheus.shutdown()
        prometheus.server_close()
