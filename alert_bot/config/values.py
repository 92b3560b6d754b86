"""Setting values as the file and the environment give them: the ConfigError every
problem raises, naming its key, and the parsers of durations, numbers, booleans, names,
times of day, URLs and mappings with known keys."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rigwatch.words import parse_bool

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message starts with the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


# Below this no interval or timeout of the bot can work (a loop that spins, a read that
# times out before the first byte); settings that need more say so with their own floor.
DURATION_FLOOR = 0.1


def parse_duration(key: str, value: Any, floor: float = DURATION_FLOOR) -> float:
    """Seconds from 30, 1.5, "500ms", "30s", "10m", "1h" or "7d"; at least floor seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration like 30s or 10m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ConfigError(key, f"expected a duration like 30s or 10m, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ConfigError(key, f"expected a finite duration like 30s or 10m, got {value!r}")
    if seconds <= 0:
        raise ConfigError(key, f"must be positive, got {value!r}")
    if seconds < floor:
        raise ConfigError(key, f"must be at least {floor:g}s, got {value!r}")
    return seconds


def duration_at_least(floor: float) -> Callable[[str, Any], float]:
    """A parser for a duration setting of at least floor seconds."""
    return lambda key, value: parse_duration(key, value, floor)


def _int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {number}")
    return number


def _number(key: str, value: Any, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+,\d+\s*", value):
        # A decimal comma, as many locales write prices: YAML reads 5,5 as the text "5,5".
        raise ConfigError(
            key, f"write the decimal with a point: {value.strip().replace(',', '.')}, not {value!r}"
        )
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):  # .inf, "1e309" (overflows to inf), NaN
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    if not minimum <= number <= (maximum if maximum is not None else float("inf")):
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(key, f"must be at least {minimum:g}{upper}, got {value!r}")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        if isinstance(value, str | int):
            return parse_bool(str(value))
    except ValueError:
        pass
    raise ConfigError(key, f"expected true/false, 1/0, yes/no or on/off, got {value!r}")


def _count(minimum: int) -> Callable[[str, Any], int]:
    """A parser for an integer setting of at least minimum."""
    return lambda key, value: _int(key, value, minimum)


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected a non-empty name, got {value!r}")
    return value.strip()


def _time_of_day(key: str, value: Any) -> int:
    """Minutes after midnight from "HH:MM"."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 7:00 as 420 (base 60): the time was not quoted.
        raise ConfigError(
            key, f'write the time in quotes, like "07:30" (unquoted, YAML read it as {value})'
        )
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(value).strip())
    if isinstance(value, bool) or not match:
        raise ConfigError(key, f"expected a local time like 07:30, got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def _url(key: str, value: str) -> str:
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(key, f"expected an http:// or https:// URL, got {value!r}")
    return value


def _read_text(key: str, path: str | Path) -> str:
    """A file's text, or a ConfigError naming the key (unreadable, or not UTF-8 text)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None


def _check_keys(key: str, section: Any, allowed: set[str]) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(key, "expected a mapping")
    for name in section:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            # The nearest known name, as the exporter's flags and the environment check offer.
            close = difflib.get_close_matches(str(name), sorted(allowed), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(where, f"unknown setting ({hint}known: {', '.join(sorted(allowed))})")
    return section


def _labels(key: str, value: Any) -> dict[str, str]:
    section = _check_keys(key, value, set(value or {}))
    result = {}
    for name, text in section.items():
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            raise ConfigError(f"{key}.{name}", "expected a string")
        result[str(name)] = str(text)
    return result


def _user_chats(key: str, value: Any) -> dict[str, int]:
    """runs.user_chats: Unix user names, each to one Telegram chat id."""
    section = _check_keys(key, value, set(value or {}))
    chats = {}
    for name, chat in section.items():
        user = str(name).strip()
        if not user or any(c.isspace() for c in user):
            raise ConfigError(f"{key}.{name}", "expected a Unix user name without spaces")
        chats[user] = _int(f"{key}.{user}", chat)
    return chats


def _id_list(key: str, value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of numeric ids")
    return frozenset(_int(f"{key}[{i}]", item) for i, item in enumerate(value))


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(key: str, value: Any) -> int:
    """Monday = 0 ... Sunday = 6, from the day's English name or its first three letters."""
    name = str(value).strip().lower()
    for number, day in enumerate(WEEKDAYS):
        if name in (day, day[:3]) and not isinstance(value, bool):
            return number
    raise ConfigError(key, f"expected a day of the week like monday, got {value!r}")
