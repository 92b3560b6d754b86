"""What to send next to a chat: its pending notifications rendered into blocks and packed into
one message (a backlog into few, compact ones), and which silence one button row can offer."""

from __future__ import annotations

from dataclasses import dataclass

from alert_bot.alerts.messages import Block, OutgoingMessage, blocks_for, pack
from alert_bot.alerts.model import Alert, Notification
from alert_bot.alerts.render import AlertRenderer, alert_place
from alert_bot.config import DeliverySettings
from alert_bot.store import PendingNotification

ENOUGH_BLOCKS = 400  # more than enough for the next message


@dataclass(frozen=True)
class Plan:
    """The next message for a chat and the notifications it carries (some only in part)."""

    message: OutgoingMessage
    rows: list[PendingNotification]

    @property
    def thread_id(self) -> int | None:
        return self.rows[0].thread_id


def plan_next(
    rows: list[PendingNotification],
    renderer: AlertRenderer,
    settings: DeliverySettings,
    now: float,
    solo: bool = False,
) -> Plan | None:
    """The next message from a chat's pending notifications (oldest first); solo while
    isolating a message Telegram refused: one notification only."""
    if not rows:
        return None
    # Only one forum topic per message.
    rows = [r for r in rows if r.thread_id == rows[0].thread_id]
    if solo:
        rows = rows[:1]
    pending_alerts = sum(len(r.payload.get("alerts", [None])) - r.alerts_done for r in rows)
    compact = pending_alerts > settings.compact_after_alerts
    budget = settings.max_message_chars
    blocks: list[Block] = []
    for row in rows:
        if row.kind == "notice":
            parts = blocks_for(row.payload["html"], row.id, 0, budget, settings.max_parts_per_alert)
            blocks += parts[min(row.parts_done, len(parts) - 1) :]
            continue
        notification = Notification.from_json(row.payload)
        for index in range(row.alerts_done, len(notification.alerts)):
            alert = notification.alerts[index]
            markup = renderer.render(alert, notification, compact, now)
            parts = blocks_for(
                markup,
                row.id,
                index,
                budget,
                settings.max_parts_per_alert,
                alert,
                notification,
                title=alert.alertname,
            )
            # Parts of a long alert that already went out are not sent again (its last
            # part always is, should it now render shorter, so that the alert completes).
            skip = min(row.parts_done, len(parts) - 1) if index == row.alerts_done else 0
            blocks += parts[skip:]
        if len(blocks) > ENOUGH_BLOCKS:
            break
    if not blocks:
        return None
    message = pack(blocks, budget, compact)[0]
    in_message = {b.notification_id for b in message.blocks}
    return Plan(message, [r for r in rows if r.id in in_message])


def progress_after(plan: Plan) -> dict[int, tuple[int, int, bool]]:
    """Per notification in a message Telegram accepted: (alerts done, parts of the next alert
    done, finished)."""
    done = {r.id: (r.alerts_done, r.parts_done) for r in plan.rows}
    for block in plan.message.blocks:
        if block.completes_alert:
            done[block.notification_id] = (block.alert_index + 1, 0)
        else:
            done[block.notification_id] = (block.alert_index, block.part_index + 1)
    totals = {r.id: len(r.payload.get("alerts", [None])) for r in plan.rows}
    return {
        row_id: (count, parts, count >= totals[row_id]) for row_id, (count, parts) in done.items()
    }


def firing_in(message: OutgoingMessage) -> list[Alert]:
    return [a for a in message.alerts if a.status == "firing"]


# A button under a message creates one silence per alert it shows; a storm's packed message
# gets none (one button silencing 40 alerts at once is what /alerts and Alertmanager are for).
MAX_SILENCES_PER_BUTTON = 10


def silence_targets(alerts: list[Alert], heartbeat: str) -> list[dict[str, str]]:
    """The label sets a message's silence button covers: exactly its firing alerts (never the
    watchdog heartbeat), or none when there are too many for one button."""
    chosen = [dict(a.labels) for a in alerts if a.alertname != heartbeat]
    return chosen if len(chosen) <= MAX_SILENCES_PER_BUTTON else []


def describe_targets(targets: list[dict[str, str]]) -> str:
    """The alerts a button silences, by name and place, as the confirmation lists them."""
    return "; ".join(
        f"{labels.get('alertname', 'alert')} {' '.join(alert_place(labels))}".strip()
        for labels in targets
    )
