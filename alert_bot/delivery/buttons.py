"""The silence buttons under a message with firing alerts: what they would silence is saved
under a short id (Telegram's callback data is 64 bytes at most), one button per duration."""

from __future__ import annotations

from alert_bot.alerts.messages import OutgoingMessage
from alert_bot.alerts.silences import SILENCE_DURATIONS, silence_length, silence_matchers
from alert_bot.delivery.planner import describe_targets, firing_in, silence_targets
from alert_bot.store import Store
from alert_bot.telegram.types import Button


def silence_buttons(short_id: str) -> list[list[Button]]:
    return [[Button("🔕 " + silence_length(d), f"s:{short_id}:{d}") for d in SILENCE_DURATIONS]]


def buttons_for(
    store: Store, message: OutgoingMessage, watchdog_alertname: str, now: float
) -> list[list[Button]] | None:
    """The silence buttons for the message's firing alerts (the heartbeat never gets one);
    None when there is nothing to silence."""
    targets = silence_targets(firing_in(message), watchdog_alertname)
    if not targets:
        return None
    short_id = store.buttons.save(
        [silence_matchers(labels) for labels in targets], describe_targets(targets), now
    )
    return silence_buttons(short_id)
