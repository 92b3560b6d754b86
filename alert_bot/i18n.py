"""The language the bot speaks (the `language` setting: en or ru) and the words every message
shares: durations and times in the owner's time zone.

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
from datetime import datetime, tzinfo
from pathlib import Path

from alert_bot.config import ConfigError

DOMAIN = "rigwatch-bot"
LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).parent / "locale"

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
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z" if with_date else "%H:%M %Z")


def format_rfc3339(text: str, zone: tzinfo) -> str:
    """An Alertmanager time ("2024-05-01T12:03:00.000Z") in the owner's time zone; the text
    as given when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return format_time(moment, zone)
