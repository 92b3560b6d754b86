"""Silences as the bot offers them: Alertmanager matchers as its own syntax writes them, the
matchers that silence one alert, the lengths a silence button offers, and the link to
Alertmanager's new-silence form filled with an alert's labels."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from alert_bot.i18n import _


def matcher_text(matcher: dict) -> str:
    """One Alertmanager matcher as written in its own syntax: name, operator, value. The
    operator comes from isEqual/isRegex; without it "alertname!~A|B" would read as its opposite."""
    equal = matcher.get("isEqual", True)
    operator = ("=~" if equal else "!~") if matcher.get("isRegex") else ("=" if equal else "!=")
    return f"{matcher.get('name')}{operator}{matcher.get('value')}"


def matchers_text(matchers: list[dict]) -> str:
    return ", ".join(matcher_text(m) for m in matchers)


def silence_matchers(labels: Mapping[str, str]) -> list[dict]:
    return [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in sorted(labels.items())
    ]


# The silences a button offers, and how long each lasts (seconds).
SILENCE_DURATIONS = {"1h": 3600, "4h": 4 * 3600, "24h": 24 * 3600}


def silence_length(key: str) -> str:
    """A silence button's length in words ("4h")."""
    return _("{hours}h").format(hours=SILENCE_DURATIONS[key] // 3600)


SILENCE_URL_MAX_CHARS = 2000

IDENTIFYING_LABELS = ("alertname", "rig", "instance", "gpu", "severity")


def alertmanager_silence_url(base: str, labels: dict[str, str]) -> str:
    """A link to Alertmanager's new-silence form, filled with the alert's labels; with only the
    identifying ones when all of them would make a URL too long for a message request."""

    def url(chosen: dict[str, str]) -> str:
        matchers = ",".join(f'{name}="{value}"' for name, value in sorted(chosen.items()))
        filter_text = urllib.parse.quote("{" + matchers + "}")
        return f"{base.rstrip('/')}/#/silences/new?filter=" + filter_text

    full = url(labels)
    if len(full) <= SILENCE_URL_MAX_CHARS:
        return full
    short = url({k: v for k in IDENTIFYING_LABELS if 0 < len(v := labels.get(k, "")) <= 200})
    return short if len(short) <= SILENCE_URL_MAX_CHARS else url({})
