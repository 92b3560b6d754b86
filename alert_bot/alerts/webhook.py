"""Reading Alertmanager's webhook: validating a v4 payload, its dedupe key, and routing its alerts
to chats. Everything here is pure; the HTTP handler and the store live elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType

from alert_bot.alerts.model import STATUSES, Alert, Labels, Notification, parse_time
from alert_bot.config import Config
from alert_bot.store import NewNotification


class PayloadError(ValueError):
    """The body can never be a valid notification; the message says what is wrong."""


def _unicode(text: str, where: str) -> str:
    """JSON may escape a lone UTF-16 surrogate (\\ud800); such a string cannot be encoded as
    UTF-8, so neither SQLite nor Telegram could take it: refuse it here, not with a 5xx later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{where} holds a lone UTF-16 surrogate, not valid text") from None
    return text


def _string_map(value: object, where: str, required: bool = True) -> Labels:
    if value is None and not required:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of strings")
    for key, item in value.items():
        _unicode(key, f"a name in {where}")
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key} must be a string")
        _unicode(item, f"{where}.{key}")
    # Read-only from here on; no copy: the parsed body that held the dict is dropped.
    return MappingProxyType(value)


def _string(value: object, where: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string")
    return _unicode(value, where)


def _time(value: object, where: str, required: bool = True) -> str:
    text = _string(value, where, required)
    if required and not text:
        raise PayloadError(f"{where} must not be empty")
    if text:
        try:
            parse_time(text)
        except ValueError:
            raise PayloadError(f"{where} is not an RFC 3339 time: {text[:40]!r}") from None
    return text


def parse_notification(body: bytes) -> Notification:
    """Validate a webhook body; raises PayloadError naming the first problem found."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("body is JSON nested too deeply to be a notification") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (Alertmanager webhook payload)")
    version = data.get("version")
    if version != "4":
        raise PayloadError(f'version must be "4" (Alertmanager webhook v4), got {version!r}')
    status = data.get("status")
    if status not in STATUSES:
        raise PayloadError(f"status must be firing or resolved, got {status!r}")
    group_key = _string(data.get("groupKey"), "groupKey")
    if not group_key:
        raise PayloadError("groupKey must not be empty")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("alerts must be a non-empty list")
    clean_alerts = []
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise PayloadError(f"{where} must be an object")
        alert_status = alert.get("status")
        if alert_status not in STATUSES:
            raise PayloadError(f"{where}.status must be firing or resolved, got {alert_status!r}")
        labels = _string_map(alert.get("labels"), f"{where}.labels")
        if not labels.get("alertname"):
            raise PayloadError(f"{where}.labels.alertname is missing")
        clean_alerts.append(
            Alert(
                status=alert_status,
                labels=labels,
                annotations=_string_map(
                    alert.get("annotations"), f"{where}.annotations", required=False
                ),
                starts_at=_time(alert.get("startsAt"), f"{where}.startsAt"),
                ends_at=_time(alert.get("endsAt"), f"{where}.endsAt", required=False),
                generator_url=_string(
                    alert.get("generatorURL"), f"{where}.generatorURL", required=False
                ),
                fingerprint=_string(
                    alert.get("fingerprint"), f"{where}.fingerprint", required=False
                ),
            )
        )
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts must be a non-negative integer")
    return Notification(
        status=status,
        group_key=group_key,
        alerts=tuple(clean_alerts),
        receiver=_string(data.get("receiver"), "receiver", required=False),
        group_labels=_string_map(data.get("groupLabels"), "groupLabels", required=False),
        common_labels=_string_map(data.get("commonLabels"), "commonLabels", required=False),
        common_annotations=_string_map(
            data.get("commonAnnotations"), "commonAnnotations", required=False
        ),
        external_url=_string(data.get("externalURL"), "externalURL", required=False),
        truncated_alerts=truncated,
    )


def dedupe_key(notification: Notification) -> str:
    """Equal for the same notification sent by both members of an Alertmanager HA pair.

    endsAt takes part only for resolved alerts: for firing ones it is Prometheus's moving
    "valid until" estimate, which the two Alertmanagers may have received at different times.
    """
    parts = sorted(
        (
            alert.identity,
            alert.status,
            alert.starts_at,
            alert.ends_at if alert.status == "resolved" else "",
        )
        for alert in notification.alerts
    )
    encoded = json.dumps([notification.group_key, notification.status, parts]).encode()
    return hashlib.sha256(encoded).hexdigest()


PERSONAL_ALERTS = {"GpuRunStalled"}  # alerts about one run, also sent to its user's chat


def route(notification: Notification, config: Config) -> list[NewNotification]:
    """Split a notification into one stored notification per destination (chat, topic)."""
    destinations: dict[tuple[int, int | None], list[Alert]] = {}
    for alert in notification.alerts:
        labels = alert.labels
        # A stalled run is its person's business too (runs.user_chats): the alert carries
        # the process's user label.
        user = labels.get("user", "") if labels.get("alertname") in PERSONAL_ALERTS else ""
        for target in config.targets(labels, user):
            destinations.setdefault(target, []).append(alert)
    result = []
    for (chat_id, thread_id), alerts in destinations.items():
        payload = notification.with_alerts(alerts).to_json()
        result.append(NewNotification(chat_id, thread_id, "alerts", payload))
    return result
