"""Alertmanager's notification as the bot holds it: frozen dataclasses with the fields the bot
uses named (an alert's status, labels, annotations, times, generator URL and fingerprint; a
notification's group and its alerts), read from the webhook (alerts.webhook) or from what the
outbox stored (from_json), and written back in Alertmanager's own shape (to_json), which the
outbox stores and templates read."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

STATUSES = ("firing", "resolved")

Labels = Mapping[str, str]


def _stored_map(value: object) -> Labels:
    """A label or annotation map as the outbox stored it (an older row may lack it)."""
    if not isinstance(value, Mapping):
        return MappingProxyType({})
    return MappingProxyType({str(k): str(v) for k, v in value.items()})


def _stored_text(data: Mapping, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as Alertmanager's webhook describes it, validated."""

    status: str  # firing or resolved
    labels: Labels
    annotations: Labels
    starts_at: str  # RFC 3339, as Alertmanager wrote it
    ends_at: str = ""
    generator_url: str = ""
    fingerprint: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def identity(self) -> str:
        """The fingerprint, or a stable hash of the labels when the sender left it out."""
        if self.fingerprint:
            return self.fingerprint
        encoded = json.dumps(dict(self.labels), sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: Mapping) -> Alert:
        """An alert in to_json's shape, as the outbox stored it: what the webhook validated
        before it was stored, read back without failing on a field an older release left out."""
        return cls(
            status=_stored_text(data, "status") or "firing",
            labels=_stored_map(data.get("labels")),
            annotations=_stored_map(data.get("annotations")),
            starts_at=_stored_text(data, "startsAt"),
            ends_at=_stored_text(data, "endsAt"),
            generator_url=_stored_text(data, "generatorURL"),
            fingerprint=_stored_text(data, "fingerprint"),
        )

    def to_json(self) -> dict:
        """Alertmanager's own shape and names: what the outbox stores and templates read."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Notification:
    """A validated Alertmanager notification: the parts the bot uses, named."""

    status: str
    group_key: str
    alerts: tuple[Alert, ...]
    receiver: str = ""
    group_labels: Labels = field(default_factory=lambda: MappingProxyType({}))
    common_labels: Labels = field(default_factory=lambda: MappingProxyType({}))
    common_annotations: Labels = field(default_factory=lambda: MappingProxyType({}))
    external_url: str = ""
    truncated_alerts: int = 0

    def with_alerts(self, alerts: Iterable[Alert]) -> Notification:
        return replace(self, alerts=tuple(alerts))

    @classmethod
    def from_json(cls, data: Mapping) -> Notification:
        """A notification in to_json's shape, as the outbox stored it."""
        alerts = data.get("alerts")
        truncated = data.get("truncatedAlerts")
        return cls(
            status=_stored_text(data, "status") or "firing",
            group_key=_stored_text(data, "groupKey"),
            alerts=tuple(Alert.from_json(a) for a in alerts if isinstance(a, Mapping))
            if isinstance(alerts, list)
            else (),
            receiver=_stored_text(data, "receiver"),
            group_labels=_stored_map(data.get("groupLabels")),
            common_labels=_stored_map(data.get("commonLabels")),
            common_annotations=_stored_map(data.get("commonAnnotations")),
            external_url=_stored_text(data, "externalURL"),
            truncated_alerts=truncated if isinstance(truncated, int) else 0,
        )

    def to_json(self) -> dict:
        """Alertmanager's own shape and names (the outbox's stored payload)."""
        return {
            "receiver": self.receiver,
            "status": self.status,
            "groupKey": self.group_key,
            "groupLabels": dict(self.group_labels),
            "commonLabels": dict(self.common_labels),
            "commonAnnotations": dict(self.common_annotations),
            "externalURL": self.external_url,
            "truncatedAlerts": self.truncated_alerts,
            "alerts": [alert.to_json() for alert in self.alerts],
        }


def parse_time(value: str) -> datetime:
    """RFC 3339 time as Alertmanager writes it (nanoseconds and a Z allowed)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python before 3.11 reads at most microseconds: cut longer fractions.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


def valid_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = parse_time(text)
    except ValueError:
        return None
    # Alertmanager writes the zero time 0001-01-01 for "not ended".
    return moment if moment.year > 1970 else None
