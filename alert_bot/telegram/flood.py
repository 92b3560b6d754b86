"""Self-imposed flood control: sliding windows per chat, per group chat and overall, so the bot
stays under Telegram's limits instead of discovering them through 429s.

A send is stamped when its request finishes, not when it starts: Telegram counts arrivals, and
an arrival is never later than our finish, so the spacing Telegram sees is at least ours.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from alert_bot.config import RateLimits

MAX_IDLE_CHATS = 1000  # windows kept before idle ones are dropped


class _Window:
    def __init__(self, limit: int, seconds: float):
        self.limit = limit
        self.seconds = seconds
        self.stamps: deque[list[float]] = deque()

    def delay(self, now: float) -> float:
        while self.stamps and self.stamps[0][0] <= now - self.seconds:
            self.stamps.popleft()
        if len(self.stamps) < self.limit:
            return 0.0
        return max(0.0, self.stamps[0][0] + self.seconds - now)

    def stamp(self, now: float) -> list[float]:
        entry = [now]
        self.stamps.append(entry)
        return entry


class Slot:
    """A reserved send; finish() moves its stamps to the moment the request completed."""

    def __init__(self, limiter: FloodLimiter, entries: list[list[float]]):
        self._limiter = limiter
        self._entries = entries

    def finish(self) -> None:
        now = self._limiter.clock()
        with self._limiter.lock:
            for entry in self._entries:
                entry[0] = max(entry[0], now)


class FloodLimiter:
    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self.lock = threading.Lock()
        self._global = _Window(limits.global_messages, limits.global_window)
        self._chats: dict[int, _Window] = {}
        self._groups: dict[int, _Window] = {}
        self._blocked_until: dict[int, float] = {}

    def _forget_idle(self, now: float) -> None:
        """Drop the windows of chats with nothing recent: anyone can write to the bot (a
        stranger's /start gets an answer), so one window per chat ever seen would only grow."""
        for table in (self._chats, self._groups):
            for chat_id in [c for c, w in table.items() if w.delay(now) == 0 and not w.stamps]:
                del table[chat_id]
        for chat_id in [c for c, until in self._blocked_until.items() if until <= now]:
            del self._blocked_until[chat_id]

    def _windows(self, chat_id: int) -> list[_Window]:
        if len(self._chats) + len(self._blocked_until) > MAX_IDLE_CHATS:
            self._forget_idle(self.clock())
        windows = [self._global]
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Window(
                self.limits.per_chat_messages, self.limits.per_chat_window
            )
        windows.append(chat)
        if chat_id < 0:  # groups and channels have negative ids
            group = self._groups.get(chat_id)
            if group is None:
                group = self._groups[chat_id] = _Window(
                    self.limits.group_messages, self.limits.group_window
                )
            windows.append(group)
        return windows

    def delay(self, chat_id: int) -> float:
        """Seconds until a message to this chat is allowed (0 when it is allowed now)."""
        now = self.clock()
        with self.lock:
            blocked = self._blocked_until.get(chat_id, 0.0) - now
            return max([blocked, *[w.delay(now) for w in self._windows(chat_id)]])

    def try_reserve(self, chat_id: int) -> Slot | None:
        now = self.clock()
        with self.lock:
            if self._blocked_until.get(chat_id, 0.0) > now:
                return None
            windows = self._windows(chat_id)
            if any(w.delay(now) > 0 for w in windows):
                return None
            return Slot(self, [w.stamp(now) for w in windows])

    def reserve(
        self, chat_id: int, stop: threading.Event | None = None, limit: float = 120.0
    ) -> Slot | None:
        """Wait until a send is allowed and reserve it; None if stopped or waited past limit."""
        deadline = self.clock() + limit
        while True:
            slot = self.try_reserve(chat_id)
            if slot is not None:
                return slot
            wait = min(max(self.delay(chat_id), 0.005), 1.0)
            if self.clock() + wait > deadline:
                return None
            if stop is not None:
                if stop.wait(wait):
                    return None
            else:
                time.sleep(wait)

    def block(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: hold it (only it) back."""
        with self.lock:
            until = self.clock() + seconds
            self._blocked_until[chat_id] = max(self._blocked_until.get(chat_id, 0.0), until)

    def blocked_for(self, chat_id: int) -> float:
        with self.lock:
            return max(0.0, self._blocked_until.get(chat_id, 0.0) - self.clock())
