"""The bot's own flood limits: per chat, per group, overall, 429 blocks, and bounded memory."""

from __future__ import annotations

from alert_bot.config import RateLimits
from alert_bot.telegram.flood import MAX_IDLE_CHATS, FloodLimiter


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_chat_window_and_429_block_hold_back_only_that_chat():
    clock = ManualClock()
    limiter = FloodLimiter(RateLimits(per_chat_messages=2, per_chat_window=1.0), clock)
    for _ in range(2):
        limiter.try_reserve(1).finish()
    assert limiter.try_reserve(1) is None
    assert 0 < limiter.delay(1) <= 1.0
    assert limiter.try_reserve(2) is not None
    limiter.block(3, 5.0)
    assert limiter.try_reserve(3) is None and limiter.blocked_for(3) == 5.0
    clock.now += 1.01
    assert limiter.try_reserve(1) is not None
    assert limiter.try_reserve(3) is None


def test_windows_of_idle_chats_are_forgotten():
    """One window per chat ever seen grew without bound (strangers' chats included)."""
    clock = ManualClock()
    limiter = FloodLimiter(RateLimits(), clock)
    for chat_id in range(-1, -3 * MAX_IDLE_CHATS, -1):
        limiter.try_reserve(chat_id).finish()
        limiter.block(chat_id, 1.0)
        clock.now += 0.1  # a group window (60 s) has expired 600 chats later
    assert len(limiter._chats) <= MAX_IDLE_CHATS + 100
    assert len(limiter._groups) <= MAX_IDLE_CHATS + 100
    assert len(limiter._blocked_until) <= MAX_IDLE_CHATS + 100
    # A chat in its window keeps it: the limit still holds right after a forget.
    busy = 424242
    for _ in range(RateLimits().per_chat_messages):
        limiter.try_reserve(busy).finish()
    for chat_id in range(1, 2 * MAX_IDLE_CHATS):
        limiter.delay(10**6 + chat_id)
    assert limiter.try_reserve(busy) is None
