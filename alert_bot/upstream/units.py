"""What a PromQL expression measures, read from its metric names' unit suffixes (Prometheus's
naming convention): the quantity in words, the unit shown on a chart's axis, and the factor that
scales raw values for reading (bytes → GiB, ratios → %); symbols and counted things in the bot's
language, counts with their plural form ("0 ошибок"), numbers with its decimal separator."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alert_bot.i18n import N_, _, format_number, ngettext

# What the shipped counters count, each with its forms by number (a counter of the user's own
# keeps the word of its name).
COUNTED: dict[str, Callable[[int], str]] = {
    "errors": lambda n: ngettext("error", "errors", n),
    "packets": lambda n: ngettext("packet", "packets", n),
    "rows": lambda n: ngettext("row", "rows", n),
    "pages": lambda n: ngettext("page", "pages", n),
    "failures": lambda n: ngettext("failure", "failures", n),
    "retries": lambda n: ngettext("retry", "retries", n),
    "edits": lambda n: ngettext("edit", "edits", n),
    "commands": lambda n: ngettext("command", "commands", n),
    "dead letters": lambda n: ngettext("dead letter", "dead letters", n),
}


@dataclass(frozen=True)
class Unit:
    quantity: str  # in words, for a title: "temperature"
    symbol: str  # on the axis and next to numbers: "°C"
    scale: float = 1.0  # displayed = raw * scale
    percent: bool = False  # a share: the axis spans 0-100 %
    state: bool = False  # 0 or 1: the axis shows no fractions
    counted: str = ""  # a count of these (a COUNTED key): the symbol takes its number's form

    def axis_label(self) -> str:
        return f"{self.quantity} ({self.symbol})" if self.symbol else self.quantity

    def format(self, raw: float) -> str:
        value = raw * self.scale
        whole = abs(value) >= 100 or value == int(value)
        number = format_number(value, ".0f" if whole else ".3g")
        if self.counted in COUNTED:
            # A fraction takes the form of 2 in Russian ("1,5 ошибки"), the plural in English.
            return f"{number} {COUNTED[self.counted](int(round(value)) if whole else 2)}"
        return f"{number} {self.symbol}" if self.symbol != "%" else f"{number} %"


# Memory and sizes in binary units everywhere the bot shows them (/status, /runs, run reports,
# charts): one card's 20 GiB must not read 21.5 GB in one place and 20.0 GiB in another.
MIB = 1024**2
GIB = 1024**3

# Suffix → (quantity, symbol, scale). Longest suffixes first where one ends another.
SUFFIXES: tuple[tuple[str, str, str, float], ...] = (
    ("_celsius", N_("temperature"), "°C", 1.0),
    ("_watts", N_("power"), N_("W"), 1.0),
    ("_joules", N_("energy"), N_("kJ"), 1e-3),
    ("_bytes", N_("size"), N_("GiB"), 1 / GIB),
    ("_hertz", N_("clock"), N_("MHz"), 1e-6),
    ("_rpm", N_("fan speed"), N_("RPM"), 1.0),
    ("_volts", N_("voltage"), N_("V"), 1.0),
    ("_amperes", N_("current"), N_("A"), 1.0),
    ("_seconds", N_("time"), N_("s"), 1.0),
    ("_width", N_("PCIe link width"), N_("lanes"), 1.0),
    ("_generation", N_("PCIe link generation"), N_("gen"), 1.0),
    ("_depth", N_("queue"), N_("items"), 1.0),
    (":count", N_("count"), N_("GPUs"), 1.0),
    ("_recovery_action", N_("recovery action"), N_("code"), 1.0),  # NVML's numbered verdicts
)
STATES = ("_up", "_info", "_active", "_pending", "_failure", "_success", "_readonly")
PERCENT_WORD = N_("share")

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTORS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def metric_names(expr: str) -> list[str]:
    """The metric names an expression reads, in order (functions and keywords left out)."""
    text = _LABEL_LISTS.sub(" ", _SELECTORS.sub(" ", _STRINGS.sub(" ", expr)))
    names = []
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS or name[0].isdigit():
            continue
        if re.fullmatch(r"[0-9.eE+-]+", name):
            continue
        if name not in names:
            names.append(name)
    return names


def _metric_part(name: str) -> str:
    """A recording rule's metric, from its level:metric:operations name
    (gpu:rigwatch_loaded_temperature_celsius:avg1h → rigwatch_loaded_temperature_celsius);
    the units read from it. Other names as they are (a :count rule keeps its own unit)."""
    parts = name.split(":")
    if len(parts) == 3 and parts[1] and parts[2] != "count":
        return parts[1]
    return name


def _counted(stem: str) -> str:
    """What a counter counts, in words: "errors", "dead letters", "failed notifications"."""
    words = stem.split("_")
    if len(words) >= 2 and words[-1] in ("letters", "failed"):
        return f"{words[-2]} {words[-1]}"
    return words[-1]


def _counted_words(what: str, count: int = 2) -> str:
    """The counted thing in the bot's language: "errors" / "ошибки" (the form of 2, for titles
    and axes), or another count's form."""
    return COUNTED[what](count) if what in COUNTED else what


def _base_unit(name: str, rated: bool) -> Unit:
    counter = name.endswith("_total")
    stem = name.removesuffix("_total")
    for suffix, quantity, symbol, scale in SUFFIXES:
        if stem.endswith(suffix):
            if counter and rated:
                if suffix == "_seconds":  # seconds per second: the share of time busy
                    return Unit(_("busy"), "%", 100.0, percent=True)
                if suffix == "_bytes":
                    return Unit(_("throughput"), _("MiB/s"), 1 / MIB)
                per_second = _("{symbol}/s").format(symbol=_(symbol))
                return Unit(_("{quantity} rate").format(quantity=_(quantity)), per_second, scale)
            return Unit(_(quantity), _(symbol), scale)
    if stem.endswith(STATES) or name == "up":
        word = stem.rsplit("_", 1)[-1] if name != "up" else "up"
        return Unit(_("{word} (1 = yes)").format(word=word), _("state"), 1.0, state=True)
    if counter:
        what = _counted(stem)
        words = _counted_words(what)
        if rated:
            per_second = _("{symbol}/s").format(symbol=_counted_words(what, 5))
            return Unit(_("{quantity} rate").format(quantity=words), per_second, 1.0)
        return Unit(words, words, 1.0, counted=what)
    return Unit(stem.rsplit("_", 1)[-1], "", 1.0)


# Unit names an alert rule's `unit` annotation may give that are not a metric suffix's word
# (celsius, watts, bytes, ...): what the value is, in the words of Prometheus's metric names.
_NAMED_AS: dict[str, tuple[str, bool]] = {
    "ratio": ("x_ratio", False),
    "busy": ("x_seconds_total", True),  # seconds per second: the share of time busy
    "bytes/s": ("x_bytes_total", True),
    "lanes": ("x_width", False),
    "gpus": ("x:count", False),
    "code": ("x_recovery_action", False),
}


def unit_named(name: str) -> Unit:
    """The unit an alert rule names in its `unit` annotation, for its chart and its resolved
    notice's "Now:" line: a metric suffix's word (celsius, watts, joules, bytes, hertz, rpm,
    volts, amperes, seconds, generation, depth), one of ratio, busy, bytes/s, lanes, gpus, code,
    heartbeat, a state (up, info, active, pending, failure, success, readonly), or a counted thing
    ("errors", "dead letters"; "new errors" for what an increase() counts).
    Raises ValueError for an empty name."""
    name = name.strip()
    if not name:
        raise ValueError("an empty unit name")
    if name.startswith("new "):
        what = name.removeprefix("new ").strip()
        words = _counted_words(what)
        return Unit(_("new {what}").format(what=words), words, 1.0, counted=what)
    if name == "heartbeat":  # vector(1): always 1 while the pipeline works
        return Unit(_("value"), _("state"), 1.0, state=True)
    if name in _NAMED_AS:
        metric, rated = _NAMED_AS[name]
        if metric == "x_ratio":
            return Unit(_(PERCENT_WORD), "%", 100.0, percent=True)
        return _base_unit(metric, rated)
    if f"_{name}" in STATES or any(suffix == f"_{name}" for suffix, *_rest in SUFFIXES):
        return _base_unit(f"x_{name}", False)
    return _base_unit("x_" + name.replace(" ", "_") + "_total", False)


def unit_of(expr: str) -> Unit:
    """The unit of an expression's value: that of its first metric, a percentage when it divides
    two of the same kind (used/total bytes, errors/packets), and per second under rate()."""
    names = [_metric_part(name) for name in metric_names(expr)]
    rated = bool(re.search(r"\b(?:i?rate|deriv)\s*\(", expr))
    if not names:
        return Unit(_("value"), _("state"), 1.0, state=True)  # vector(1): a heartbeat
    units = [_base_unit(n, rated) for n in names]
    divides = "/" in _SELECTORS.sub(" ", _STRINGS.sub(" ", expr)) and len(names) >= 2
    same_kind = divides and (
        units[0].symbol == units[1].symbol or all(n.endswith("_total") for n in names[:2])
    )
    if same_kind or names[0].endswith(("_ratio", "_share")):
        return Unit(_(PERCENT_WORD), "%", 100.0, percent=True)
    counted = _counted(names[0].removesuffix("_total"))
    if (
        not rated
        and re.search(r"\bincrease\s*\(", expr)
        and (names[0].endswith("_total") or counted in COUNTED)
    ):
        what = counted
        words = _counted_words(what)
        return Unit(_("new {what}").format(what=words), words, 1.0, counted=what)
    return units[0]
