"""What the bot's long-running parts (the delivery worker, the chart loop, the Telegram update
loop, the watchdog) share: the collaborators every one of them uses, and one daemon thread
that runs until stop()."""

from __future__ import annotations

import threading
from collections.abc import Callable

from alert_bot.config import Config
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import Store


class BotLoop:
    thread_name = "loop"
    join_timeout = 10.0

    def __init__(
        self, config: Config, store: Store, metrics: BotMetrics, clock: Callable[[], float]
    ):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(self.join_timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _interrupt(self) -> None:
        """Cut short a wait of _run's that does not watch the stop event."""

    def _run(self) -> None:
        raise NotImplementedError
