"""The language the bot speaks (the `language` setting: en or ru) and the words every message
shares: durations and times in the owner's time zone, numbers and amounts of money as the
language writes them (a decimal comma in Russian, the currency after the amount), and the
durations people type in chat ("2h", "1ч30м").

Messages are gettext catalogs: the code's English strings are the message ids, marked with
`_()` (and `ngettext()` where a number decides the form, `N_()` where a string is translated
later); the Russian lives in alert_bot/locale/ru/LC_MESSAGES/rigwatch-bot.po. Installing the
package compiles it to a .mo next to it (setup.py's build step); a source checkout without one
(or with a stale one) compiles the .po in memory at start-up with Babel (installed with the
test extra), so a fresh `git clone` and an edited .po both work without a build step.

One bot process speaks one language: `use()` sets it at start-up for every thread.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from datetime import datetime, tzinfo
from pathlib import Path

from alert_bot.config.settings import LANGUAGES
from alert_bot.config.values import ConfigError

DOMAIN = "rigwatch-bot"
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).parent / "locale"

# How each language writes a number's decimal separator (CLDR's; Babel, which knows them all,
# is only installed with the test extra, so the bot's image carries these few by hand).
DECIMAL_SEPARATORS = {"en": ".", "ru": ","}
# Zone abbreviations a language writes its own way (Python's zoneinfo gives tzdata's Latin ones).
ZONE_ABBREVIATIONS = {"ru": {"MSK": "МСК"}}
# Units of the durations typed in chat, in either language (an English word in a Russian chat
# is understood too): seconds per unit.
DURATION_UNITS = {
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "м": 60,
    "мин": 60,
    "ч": 3600,
    "д": 86400,
    "дн": 86400,
}
_DURATION_PART = re.compile(r"(\d+(?:[.,]\d+)?)([^\d\s.,]*)")
_DURATION_LIKE = re.compile(r"(?:\d+(?:[.,]\d+)?[^\W\d_]{1,3})+")

_active: gettext.NullTranslations = gettext.NullTranslations()
_active_language = DEFAULT_LANGUAGE


def catalog_path(language: str, suffix: str = ".po") -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / (DOMAIN + suffix)


def compile_catalog(po_path: Path) -> bytes:
    """The .mo bytes of a .po file (fuzzy entries left out, as msgfmt does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po_path.open("rb") as source:
        catalog = read_po(source)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of a language; English is the code's own text."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")
    if language == "en":
        return gettext.NullTranslations()
    po, mo = catalog_path(language), catalog_path(language, ".mo")
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as compiled:
            return gettext.GNUTranslations(compiled)
    try:
        return gettext.GNUTranslations(io.BytesIO(compile_catalog(po)))
    except ImportError:
        if mo.exists():  # installed: the .po only looks newer (files unpacked in any order)
            with mo.open("rb") as compiled:
                return gettext.GNUTranslations(compiled)
        raise ConfigError(
            "language",
            f"{mo} is missing and Babel is not installed to compile {po.name}: install the "
            "package with `pip install .` (which compiles it), or `pip install Babel`",
        ) from None


def use(language: str) -> None:
    """Speak this language from now on (in every thread)."""
    global _active, _active_language
    _active = translations(language)
    _active_language = language


def language() -> str:
    return _active_language


def _(message: str) -> str:
    return _active.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The form for count ("1 alert", "2 alerts"; Russian has three)."""
    return _active.ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Marks a string for the catalog that is translated where it is used, not here."""
    return message


def format_duration(seconds: float, precise: bool = False) -> str:
    """A length of time for reading: "1d 2h", "2h 5m", "4m 30s", "12m", "40s". Precise (runs
    and energy) keeps one unit more on days ("1d 2h 3m") and always the seconds under an hour
    ("12m 0s"); otherwise (alerts) seconds show only under ten minutes."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days and precise:
        return _("{days}d {hours}h {minutes}m").format(days=days, hours=hours, minutes=minutes)
    if days:
        return _("{days}d {hours}h").format(days=days, hours=hours)
    if hours:
        return _("{hours}h {minutes}m").format(hours=hours, minutes=minutes)
    if minutes and (precise or (minutes < 10 and secs)):
        return _("{minutes}m {seconds}s").format(minutes=minutes, seconds=secs)
    if minutes:
        return _("{minutes}m").format(minutes=minutes)
    return _("{seconds}s").format(seconds=secs)


def format_time(moment: datetime | float, zone: tzinfo, with_date: bool = True) -> str:
    """A moment in the owner's time zone, with the zone's abbreviation: "2024-05-01 14:03 CEST"
    (or "14:03 CEST" without the date)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, zone)
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")
    return f"{text} {zone_abbreviation(local.strftime('%Z'))}"


def zone_abbreviation(abbreviation: str) -> str:
    """A zone's abbreviation as the language writes it ("MSK" is "МСК" in Russian)."""
    return ZONE_ABBREVIATIONS.get(_active_language, {}).get(abbreviation, abbreviation)


def format_number(value: float, spec: str = ".1f") -> str:
    """A number formatted by a format spec, with the language's decimal separator ("1,21")."""
    text = format(value, spec)
    separator = DECIMAL_SEPARATORS.get(_active_language, ".")
    return text.replace(".", separator) if separator != "." else text


def format_money(amount: float, currency: str) -> str:
    """An amount of money: "€0.17" or "0.17 EUR" in English (a one-character symbol goes
    first); the amount, then the currency in Russian, with a decimal comma ("0,17 ₽")."""
    number = format_number(amount, ".2f")
    if len(currency) <= 1 and _active_language == "en":
        return f"{currency}{number}"
    return f"{number} {currency}"


def format_window(seconds: float) -> str:
    """A time window after "last"/"за": "day" / "сутки", "30 days" / "30 дн.", "6 hours" /
    "6 ч", "90 minutes" / "90 мин"."""
    seconds = int(round(seconds))
    if seconds == 86400:
        return _("day")
    if seconds % 86400 == 0:
        days = seconds // 86400
        return ngettext("{count} day", "{count} days", days).format(count=days)
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return ngettext("{count} hour", "{count} hours", hours).format(count=hours)
    minutes = max(1, round(seconds / 60))
    return ngettext("{count} minute", "{count} minutes", minutes).format(count=minutes)


class DurationError(ValueError):
    """A typed duration that cannot be read; the message (in the bot's language) says which
    part is wrong."""


def looks_like_duration(text: str) -> bool:
    """Whether a word is written like a duration ("2h", "1ч30м", "2x"), not like a rig or a
    card index: digits, each group followed by a short unit."""
    return bool(_DURATION_LIKE.fullmatch(text.strip().lower()))


def parse_typed_duration(text: str) -> float:
    """Seconds from a duration as people type it in chat, in English or Russian: "30m", "2h",
    "1d", "1h30m", "2ч", "30м", "1д", "1ч30м", "1.5h"; DurationError names the wrong part."""
    typed = text.strip().lower()
    units = _("m, h, d")
    if not typed[:1].isdigit():
        raise DurationError(
            _("'{text}' is not a duration; write it like 30m, 2h or 1d").format(text=text)
        )
    total, position = 0.0, 0
    while position < len(typed):
        match = _DURATION_PART.match(typed, position)
        if match is None:
            raise DurationError(
                _("'{part}' in '{text}': expected a number; use {units}").format(
                    part=typed[position:], text=text, units=units
                )
            )
        number, unit = match.groups()
        if not unit:
            raise DurationError(
                _("'{part}' in '{text}': no unit after the number; use {units}").format(
                    part=match.group(0), text=text, units=units
                )
            )
        if unit not in DURATION_UNITS:
            raise DurationError(
                _("'{part}' in '{text}': unknown unit {unit}; use {units}").format(
                    part=match.group(0), text=text, unit=unit, units=units
                )
            )
        total += float(number.replace(",", ".")) * DURATION_UNITS[unit]
        position = match.end()
    return total


def format_rfc3339(text: str, zone: tzinfo) -> str:
    """An Alertmanager time ("2024-05-01T12:03:00.000Z") in the owner's time zone; the text
    as given when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return format_time(moment, zone)
