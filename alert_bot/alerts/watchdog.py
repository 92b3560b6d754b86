"""Dead man's switch: Alertmanager sends the always-firing Watchdog alert on a repeat interval;
when it stops arriving the pipeline (Prometheus, Alertmanager or the path to the bot) is broken,
and the bot says so in the default chat, and again when it comes back."""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime

from alert_bot.alerts.model import Alert
from alert_bot.alerts.silences import matchers_text
from alert_bot.config import Config
from alert_bot.i18n import _, format_rfc3339
from alert_bot.service.loop import BotLoop
from alert_bot.service.metrics import BotMetrics
from alert_bot.store import NewNotification, Store, StoreError
from rigwatch.logs import logger

log = logger("bot", "watchdog")

LAST_SEEN = "watchdog_last_seen"
STATE = "watchdog_state"  # "ok" or "silent"
LABELS = "watchdog_labels"  # the heartbeat's labels, JSON: what a silence on it would match


def silence_matches(silence: dict, labels: dict[str, str]) -> bool:
    """Whether an Alertmanager silence's matchers all match these labels."""
    matchers = silence.get("matchers") or []
    for matcher in matchers:
        value = labels.get(str(matcher.get("name")), "")
        if matcher.get("isRegex"):
            try:
                hit = re.fullmatch(str(matcher.get("value", "")), value) is not None
            except re.error:
                return False
        else:
            hit = value == matcher.get("value")
        if hit != matcher.get("isEqual", True):
            return False
    return bool(matchers)


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
        silences: Callable[[], list[dict]] | None = None,
    ):
        super().__init__(config, store, metrics, clock)
        self.settings = config.watchdog
        self.notify = notify
        self.silences = silences  # Alertmanager's active silences, to explain a silence
        self.started_at = clock()
        self._lock = threading.Lock()
        last = store.state.get(LAST_SEEN)
        if last is not None:
            metrics.watchdog_last_seen.set(float(last))

    def is_watchdog(self, alert: Alert) -> bool:
        return alert.alertname == self.settings.alertname

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

    def heartbeat(self, labels: dict[str, str] | None = None) -> None:
        """A Watchdog notification arrived (raises StoreError when it cannot be recorded)."""
        now = self.clock()
        with self._lock:
            self.store.state.set(LAST_SEEN, repr(now))
            if labels:
                self.store.state.set(LABELS, json.dumps(labels, sort_keys=True))
            self.metrics.watchdog_last_seen.set(now)
            if self.store.state.get(STATE) == "silent":
                self.store.state.set(STATE, "ok")
                self._notice(
                    _("💚 <b>Monitoring pipeline is back</b>")
                    + "\n"
                    + _("The Watchdog heartbeat from Alertmanager arrives again."),
                    now,
                )

    def _silenced_by(self) -> str:
        """A sentence naming the silences in Alertmanager that match the heartbeat (made in
        Alertmanager's UI or amtool: the bot never offers it), or "" when there are none."""
        if self.silences is None:
            return ""
        labels = {"alertname": self.settings.alertname}
        with contextlib.suppress(StoreError, ValueError, TypeError):
            labels.update(json.loads(self.store.state.get(LABELS) or "{}"))
        try:
            matching = [s for s in self.silences() if silence_matches(s, labels)]
        except Exception as exc:  # noqa: BLE001 - the notice must go out without it
            log.info("could not read Alertmanager's silences: %s", exc)
            return ""
        if not matching:
            return ""
        names = []
        for silence in matching[:3]:
            matchers = matchers_text(silence.get("matchers", []))
            text = f"<code>{html.escape(matchers)}</code>"
            if silence.get("createdBy"):
                text += _(" by {who}").format(who=html.escape(str(silence["createdBy"])))
            if silence.get("endsAt"):
                until = format_rfc3339(str(silence["endsAt"]), self.config.zone)
                text += " " + _("until {time}").format(time=html.escape(until))
            names.append(text)
        return "\n" + _(
            "🔕 A silence in Alertmanager matches the {alertname} heartbeat: {silences}. That "
            "silence, not a broken pipeline, is the likely reason: remove it (/silences) and the "
            "heartbeat comes back."
        ).format(alertname=html.escape(self.settings.alertname), silences="; ".join(names))

    def check(self) -> None:
        now = self.clock()
        explanation: str | None = None
        with self._lock:
            due = self._silent_for(now) > self.settings.timeout
            due = due and self.store.state.get(STATE) != "silent"
        if due:
            # Asked outside the lock: Alertmanager may take its time to answer.
            explanation = self._silenced_by()
        with self._lock:
            last_text = self.store.state.get(LAST_SEEN)
            last = float(last_text) if last_text is not None else self.started_at
            # A bot that just (re)started gets one full timeout to hear a heartbeat.
            silent_for = now - max(last, self.started_at)
            if silent_for > self.settings.timeout and self.store.state.get(STATE) != "silent":
                self.store.state.set(STATE, "silent")
                seen = (
                    datetime.fromtimestamp(last, self.config.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
                    if last_text is not None
                    else _("never since the bot started")
                )
                text = _(
                    "No {alertname} heartbeat from Alertmanager for {seconds} s (last: {seen}). "
                    "Alerts may not be reaching you: check Prometheus, Alertmanager and the bot's "
                    "webhook."
                ).format(
                    alertname=html.escape(self.settings.alertname),
                    seconds=int(silent_for),
                    seen=html.escape(seen),
                )
                self._notice(
                    _("🚨 <b>Monitoring pipeline is silent</b>")
                    + "\n"
                    + text
                    + (explanation or ""),
                    now,
                )

    def _silent_for(self, now: float) -> float:
        last_text = self.store.state.get(LAST_SEEN)
        last = float(last_text) if last_text is not None else self.started_at
        return now - max(last, self.started_at)

    def start(self) -> None:
        if self.settings.enabled:
            super().start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_interval):
            try:
                self.check()
            except StoreError as exc:
                log.error("watchdog check failed: %s", exc)
