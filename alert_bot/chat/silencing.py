"""rigwatch's own silences as the chat shows and finds them: Alertmanager's silence ids, the
comments the bot writes (a /mute, a button), when a silence ends in the chat's words, and which
silences are a rig's mute."""

from __future__ import annotations

import re

from alert_bot.chat.context import Chat
from alert_bot.i18n import format_rfc3339

SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,62}")  # Alertmanager's ids are UUIDs


def until_text(chat: Chat, ends_at: str) -> str:
    """An Alertmanager time (RFC 3339) in the owner's time zone; as given when unreadable."""
    return format_rfc3339(ends_at, chat.config.zone)


# The comments the bot writes on its own silences (English, as Alertmanager's UI shows them to
# everyone); /silences shows them in the chat's language from what they say.
MUTE_COMMENT = re.compile(r"rigwatch mute of (?P<rig>\S+) from Telegram(?:: (?P<reason>.*))?", re.S)

BUTTON_COMMENT = re.compile(r"silenced from Telegram for (?P<length>\w+): (?P<what>.*)", re.S)


def mute_comment(rig: str, reason: str) -> str:
    """The comment of a /mute silence (read back by shown_comment)."""
    return f"rigwatch mute of {rig} from Telegram" + (f": {reason}" if reason else "")


# The stack's alerts about the bot's own delivery (prometheus/rules/stack.yml): a muted rig
# must not hide that the bot itself cannot deliver.
DELIVERY_ALERTS = (
    "AlertBotDeliveryFailing",
    "AlertBotBacklogGrowing",
    "AlertBotDeadLetters",
    "AlertBotChatUnreachable",
)


def never_muted(watchdog: str) -> list[str]:
    return sorted({watchdog, *DELIVERY_ALERTS})


def mute_matchers(rig: str, watchdog: str) -> list[dict]:
    """Every alert with this rig label, except the ones a mute must never hide."""
    kept = "|".join(re.escape(name) for name in never_muted(watchdog))
    return [
        {"name": "rig", "value": rig, "isRegex": False, "isEqual": True},
        {"name": "alertname", "value": kept, "isRegex": True, "isEqual": False},
    ]


def rig_mutes(silences: list[dict], watchdog: str) -> dict[str, dict]:
    """Active silences that are rig mutes, by rig (the one ending last when there are more)."""
    mutes: dict[str, dict] = {}
    for silence in silences:
        rig = next(
            (
                m.get("value", "")
                for m in silence.get("matchers", [])
                if m.get("name") == "rig" and not m.get("isRegex") and m.get("isEqual", True)
            ),
            None,
        )
        if rig is None:
            continue
        if _shape(silence.get("matchers", [])) != _shape(mute_matchers(rig, watchdog)):
            continue
        if rig not in mutes or silence.get("endsAt", "") > mutes[rig].get("endsAt", ""):
            mutes[rig] = silence
    return mutes


def _shape(matchers: list[dict]) -> list[tuple]:
    return sorted(
        (m.get("name"), m.get("value"), bool(m.get("isRegex")), m.get("isEqual", True))
        for m in matchers
    )
