"""The bot's own metrics (names as in docs/bot-metrics.md), in a registry of their own so that
several bots in one test process do not share counters."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from alert_bot import __version__

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _QueueCollector:
    """Queue depth and oldest age read from the store at scrape time."""

    def __init__(self, stats: Callable[[], tuple[int, float]]):
        self.stats = stats

    def collect(self):
        try:
            depth, age = self.stats()
        except Exception:  # noqa: BLE001 - a broken store costs these two series, not the scrape
            return
        yield GaugeMetricFamily(
            "rigwatch_bot_queue_depth", "Notifications stored and not yet delivered.", value=depth
        )
        yield GaugeMetricFamily(
            "rigwatch_bot_queue_oldest_age_seconds",
            "Age of the oldest pending notification (0 when empty).",
            value=age,
        )


class BotMetrics:
    def __init__(self, queue_stats: Callable[[], tuple[int, float]]):
        self.registry = CollectorRegistry()

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=self.registry)

        self.received = counter(
            "rigwatch_bot_notifications_received",
            "Webhook notifications accepted (2xx), duplicates and heartbeats included.",
        )
        self.stored = counter(
            "rigwatch_bot_notifications_stored",
            "Notifications committed to the queue (one per destination chat and topic).",
        )
        self.duplicates = counter(
            "rigwatch_bot_notifications_duplicate", "Notifications dropped as HA duplicates."
        )
        self.rejected = counter(
            "rigwatch_bot_notifications_rejected", "Webhook requests answered 4xx.", "reason"
        )
        self.messages_delivered = counter(
            "rigwatch_bot_messages_delivered", "Telegram messages accepted by Telegram."
        )
        self.alerts_delivered = counter(
            "rigwatch_bot_alerts_delivered", "Alerts (inside messages) delivered."
        )
        self.delivery_failures = counter(
            "rigwatch_bot_delivery_failures",
            "Failed send attempts (network, 5xx, 429, 400, malformed).",
            "reason",
        )
        self.retries = counter("rigwatch_bot_delivery_retries", "Send attempts that were retries.")
        self.rate_limited = counter(
            "rigwatch_bot_telegram_rate_limited", "429 answers from Telegram."
        )
        self.dead_letters = counter(
            "rigwatch_bot_dead_letters",
            "Notifications given up on and moved to the dead-letter table.",
        )
        self.chat_unreachable = counter(
            "rigwatch_bot_chat_unreachable",
            "Notifications dead-lettered because Telegram cannot reach their chat, by chat id.",
            "chat",
        )
        self.edits = counter(
            "rigwatch_bot_message_edits",
            "Firing messages marked resolved by an edit, by result (edited, given_up).",
            "result",
        )
        self.latency = Histogram(
            "rigwatch_bot_delivery_latency_seconds",
            "Webhook receipt to Telegram accepted.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commands = counter("rigwatch_bot_commands", "Chat commands served.", "command")
        self.watchdog_last_seen = Gauge(
            "rigwatch_bot_watchdog_last_seen_timestamp_seconds",
            "Unix time the last Watchdog notification arrived.",
            registry=self.registry,
        )
        Gauge("rigwatch_bot_build_info", "Constant 1.", ["version"], registry=self.registry).labels(
            __version__
        ).set(1)
        self.registry.register(_QueueCollector(queue_stats))
        for reason in ("network", "5xx", "429", "400", "malformed"):
            self.delivery_failures.labels(reason)
        for result in ("edited", "given_up"):
            self.edits.labels(result)
        for reason in ("unauthorized", "too_large", "bad_payload", "not_found"):
            self.rejected.labels(reason)
