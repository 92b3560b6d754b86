"""The bot's SQLite store on a real file: what it keeps and what it forgets."""

from __future__ import annotations

from alert_bot.store import Store

DAY = 86400.0
MATCHERS = [{"name": "alertname", "value": "GpuTooHot", "isRegex": False, "isEqual": True}]


def test_silence_buttons_are_forgotten_a_month_after_they_were_last_offered(tmp_path):
    """Every message with buttons stored its matchers, and nothing ever removed them."""
    store = Store(tmp_path / "bot.db")
    try:
        start = 1_000_000.0
        stale = store.save_silence_target(MATCHERS, "GpuTooHot rig1", start)
        other = [{**MATCHERS[0], "value": "DiskFull"}]
        reused = store.save_silence_target(other, "DiskFull rig1", start)
        # The second one is offered again later (same matchers, same short id).
        assert store.save_silence_target(other, "DiskFull rig1", start + 20 * DAY) == reused
        store.prune(start + 31 * DAY, dedupe_window=300)
        assert store.silence_target(stale) is None
        assert store.silence_target(reused) == (other, "DiskFull rig1")
    finally:
        store.close()
