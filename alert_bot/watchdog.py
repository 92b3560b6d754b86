"""Dead man's switch: Alertmanager sends the always-firing Watchdog alert on a repeat interval;
when it stops arriving the pipeline (Prometheus, Alertmanager or the path to the bot) is broken,
and the bot says so in the default chat, and again when it comes back."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable

from alert_bot.config import Config
from alert_bot.loop import BotLoop
from alert_bot.metrics import BotMetrics
from alert_bot.store import NewNotification, Store, StoreError
from rigwatch.logs import logger

log = logger("bot", "watchdog")

LAST_SEEN = "watchdog_last_seen"
STATE = "watchdog_state"  # "ok" or "silent"


class Watchdog(BotLoop):
    thread_name = "watchdog"
    join_timeout = 5.0

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: BotMetrics,
        notify: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.settings = config.watchdog
        self.notify = notify
        self.started_at = clock()
        self._lock = threading.Lock()
        last = store.state.get(LAST_SEEN)
        if last is not None:
            metrics.watchdog_last_seen.set(float(last))

    def is_watchdog(self, alert: dict) -> bool:
        return alert["labels"].get("alertname") == self.settings.alertname

    def _notice(self, text: str, now: float) -> None:
        self.store.outbox.add(
            [
                NewNotification(
                    self.config.default_chat_id,
                    self.config.default_thread_id,
                    "notice",
                    {"html": text},
                )
            ],
            now,
        )
        self.notify()

    def heartbeat(self) -> None:
        """A Watchdog notification arrived (raises StoreError when it cannot be recorded)."""
        now = self.clock()
        with self._lock:
            self.store.state.set(LAST_SEEN, repr(now))
            self.metrics.watchdog_last_seen.set(now)
            if self.store.state.get(STATE) == "silent":
                self.store.state.set(STATE, "ok")
                self._notice(
                    "💚 <b>Monitoring pipeline is back</b>\n"
                    "The Watchdog heartbeat from Alertmanager arrives again.",
                    now,
                )

    def check(self) -> None:
        now = self.clock()
        with self._lock:
            last_text = self.store.state.get(LAST_SEEN)
            last = float(last_text) if last_text is not None else self.started_at
            # A bot that just (re)started gets one full timeout to hear a heartbeat.
            silent_for = now - max(last, self.started_at)
            if silent_for > self.settings.timeout and self.store.state.get(STATE) != "silent":
                self.store.state.set(STATE, "silent")
                seen = (
                    time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last))
                    if last_text is not None
                    else "never since the bot started"
                )
                self._notice(
                    "🚨 <b>Monitoring pipeline is silent</b>\n"
                    f"No {html.escape(self.settings.alertname)} heartbeat from Alertmanager for "
                    f"{int(silent_for)} s (last: {html.escape(seen)}). Alerts may not be reaching"
                    " you: check Prometheus, Alertmanager and the bot's webhook.",
                    now,
                )

    def start(self) -> None:
        if self.settings.enabled:
            super().start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_interval):
            try:
                self.check()
            except StoreError as exc:
                log.error("watchdog check failed: %s", exc)
