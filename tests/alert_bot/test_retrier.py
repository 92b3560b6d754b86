"""The delivery retrier on a real store file: the waits it picks after each kind of failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alert_bot.config import DeliverySettings, RateLimits
from alert_bot.delivery.retrier import Retrier
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import NewNotification, Store
from alert_bot.telegram.client import RetryAfter, Transient
from alert_bot.telegram.flood import FloodLimiter

CHAT = 7


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """A store file holding one pending notification for CHAT."""
    store = Store(tmp_path / "bot.db")
    try:
        store.outbox.add([NewNotification(CHAT, None, "alerts", {"alerts": []})], 0.0)
        yield store
    finally:
        store.close()


def _retrier(store: Store) -> tuple[Retrier, FloodLimiter]:
    limiter = FloodLimiter(RateLimits())
    metrics = BotMetrics(lambda: (0, 0.0))
    settings = DeliverySettings(backoff_initial=2.0, backoff_max=10.0)
    return Retrier(settings, store.outbox, limiter, metrics), limiter


def test_transient_failures_back_off_doubling_with_jitter_up_to_the_maximum(store):
    rows = store.outbox.pending_for_chat(CHAT, 10)
    retrier, _ = _retrier(store)
    now = 1000.0
    for full in (2.0, 4.0, 8.0, 10.0, 10.0):
        retrier.failed(CHAT, rows, Transient("HTTP 502", 502), now)
        wait = retrier.wait_for(CHAT, now)
        assert full / 2 <= wait <= full  # jitter takes off at most half
        due = store.outbox.next_due_at()
        assert due is not None and abs(due - (now + wait)) < 1e-6
    retrier.succeeded(CHAT)
    assert retrier.wait_for(CHAT, now) == 0.0
    retrier.failed(CHAT, rows, Transient("timeout"), now)
    assert 1.0 <= retrier.wait_for(CHAT, now) <= 2.0  # starts again at backoff_initial


def test_a_429_waits_exactly_what_telegram_asked_for_that_chat_only(store):
    rows = store.outbox.pending_for_chat(CHAT, 10)
    retrier, limiter = _retrier(store)
    retrier.failed(CHAT, rows, RetryAfter("Too Many Requests", 429, 5.0), 1000.0)
    assert store.outbox.next_due_at() == 1005.0
    assert 4.0 < limiter.blocked_for(CHAT) <= 5.0
    assert limiter.blocked_for(CHAT + 1) == 0.0
