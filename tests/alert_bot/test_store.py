"""The bot's SQLite store on a real file: what it keeps and what it forgets."""

from __future__ import annotations

from alert_bot.store import NewNotification, Store

DAY = 86400.0
MATCHERS = [{"name": "alertname", "value": "GpuTooHot", "isRegex": False, "isEqual": True}]


def test_silence_buttons_are_forgotten_a_month_after_they_were_last_offered(tmp_path):
    """Every message with buttons stored its matchers, and nothing ever removed them."""
    store = Store(tmp_path / "bot.db")
    try:
        start = 1_000_000.0
        stale = store.buttons.save([MATCHERS], "GpuTooHot rig1", start)
        other = [[{**MATCHERS[0], "value": "DiskFull"}]]  # a button holds a list of silences
        reused = store.buttons.save(other, "DiskFull rig1", start)
        # The second one is offered again later (same matchers, same short id).
        assert store.buttons.save(other, "DiskFull rig1", start + 20 * DAY) == reused
        store.prune(start + 31 * DAY, dedupe_window=300)
        assert store.buttons.target(stale) is None
        assert store.buttons.target(reused) == (other, "DiskFull rig1")
        # A button stored before buttons held several silences reads back as one silence.
        old_shape = store.buttons.save(MATCHERS, "GpuTooHot rig1", start + 31 * DAY)  # type: ignore[arg-type]
        assert store.buttons.target(old_shape) == ([MATCHERS], "GpuTooHot rig1")
    finally:
        store.close()


def test_a_backlog_of_large_notifications_is_read_a_few_megabytes_at_a_time(tmp_path):
    """The worker read up to batch_rows (500) pending rows at once: with payloads near the
    webhook's 1 MiB limit that is half a gigabyte in memory for one delivery step."""
    store = Store(tmp_path / "bot.db")
    try:
        big = {"alerts": [{"labels": {"alertname": "Big"}, "annotations": {"d": "x" * 900_000}}]}
        for _ in range(30):
            store.outbox.add([NewNotification(7, None, "alerts", big)], 1.0)
        store.outbox.add([NewNotification(8, None, "alerts", big)], 1.0)
        first = store.outbox.pending_for_chat(7, 500)
        assert 1 <= len(first) <= 10
        assert [r.id for r in first] == list(range(1, len(first) + 1))  # oldest first
        # One is always returned, however large, so a chat can never stall.
        assert len(store.outbox.pending_for_chat(7, 500, max_bytes=10)) == 1
        assert [r.chat_id for r in store.outbox.pending_for_chat(8, 500)] == [8]
    finally:
        store.close()


def test_firing_messages_are_forgotten_after_a_month(tmp_path):
    """Which message announced which alert is kept a month, then forgotten with the rest."""
    store = Store(tmp_path / "bot.db")
    try:
        start = 1_000_000.0
        with store.database.transaction() as db:
            store.threads.record_firing(db, 7, None, 41, "old", True, [("a@1", start)], start)
            store.threads.record_firing(
                db, 7, 3, 42, "new", True, [("b@1", start)], start + 20 * DAY
            )
        store.prune(start + 31 * DAY, dedupe_window=300)
        assert store.threads.firing_message(7, None, "a@1") is None
        assert store.threads.firing_message(7, 3, "b@1") == 42
        assert store.threads.firing_message(7, None, "b@1") is None  # another topic
        with store.database.transaction() as db:
            (closed,) = store.threads.record_resolved(db, 7, 3, [("b@1", start + 600)], start)
            assert store.threads.record_resolved(db, 7, 3, [("b@1", start + 600)], start) == []
        assert (closed.message.message_id, closed.alerts, closed.lasted) == (42, 1, 600)
    finally:
        store.close()
