"""The delivery's sender threads: chats are served side by side, at most one message in flight
per chat (so each chat's order holds), so a chat whose API answers slowly or oddly holds one
sender, never the others' messages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


class ChatPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self._in_flight: set[int] = set()  # chats a sender thread is working on
        self._changed = threading.Condition()
        self._senders = ThreadPoolExecutor(size, thread_name_prefix="delivery-send")

    def hand_out(
        self,
        chats: Iterable[int],
        held: Callable[[int], float],
        work: Callable[[int], None],
        stopped: Callable[[], bool],
    ) -> tuple[bool, float]:
        """Each chat not held back (held(chat) > 0: seconds it waits) handed to a sender, until
        every sender is busy; returns (handed any, seconds until a held chat is due, at most
        one)."""
        worked, wait = False, 1.0
        for chat_id in chats:
            if stopped():
                break
            seconds = held(chat_id)
            if seconds > 0:
                wait = min(wait, seconds)
                continue
            handed = self.submit(chat_id, work)
            if handed is None:
                break  # every sender busy: the next one to finish wakes the loop
            worked = worked or handed
        return worked, wait

    def submit(self, chat_id: int, work: Callable[[int], None]) -> bool | None:
        """work(chat_id) on a sender thread: True when handed out, False when the chat has one
        in flight already, None when every sender is busy (the next to finish says so)."""
        with self._changed:
            if chat_id in self._in_flight:
                return False
            if len(self._in_flight) >= self.size:
                return None
            self._in_flight.add(chat_id)
        self._senders.submit(work, chat_id)
        return True

    def done(self, chat_id: int) -> None:
        """Called by the work itself when it ends, however it ends."""
        with self._changed:
            self._in_flight.discard(chat_id)
            self._changed.notify_all()

    def close(self, timeout: float) -> None:
        """Wait (bounded) for the sends in flight, so nothing writes to the store after its
        owner closes it, then stop the threads."""
        with self._changed:
            self._changed.wait_for(lambda: not self._in_flight, timeout)
        self._senders.shutdown(wait=False, cancel_futures=True)
