"""Delivery: what the outbox holds goes to Telegram. ``planner`` decides what the next message
for a chat is, ``sender`` makes one attempt and returns a verdict, ``retrier`` owns every wait,
``worker`` is the loop tying them together and ``charts`` sends charts after the text."""

from alert_bot.delivery.charts import ChartWorker
from alert_bot.delivery.worker import DeliveryWorker

__all__ = ["ChartWorker", "DeliveryWorker"]
