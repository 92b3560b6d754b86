"""What a PromQL expression measures, read from its metric names' unit suffixes (Prometheus's
naming convention): the quantity in words, the unit shown on a chart's axis, and the factor that
scales raw values for reading (bytes → GiB, ratios → %)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alert_bot.i18n import N_, _


@dataclass(frozen=True)
class Unit:
    quantity: str  # in words, for a title: "temperature"
    symbol: str  # on the axis and next to numbers: "°C"
    scale: float = 1.0  # displayed = raw * scale
    percent: bool = False  # a share: the axis spans 0-100 %
    state: bool = False  # 0 or 1: the axis shows no fractions

    def axis_label(self) -> str:
        return f"{self.quantity} ({self.symbol})" if self.symbol else self.quantity

    def format(self, raw: float) -> str:
        value = raw * self.scale
        number = f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"
        return f"{number} {self.symbol}" if self.symbol != "%" else f"{number} %"


# Memory and sizes in binary units everywhere the bot shows them (/status, /runs, run reports,
# charts): one card's 20 GiB must not read 21.5 GB in one place and 20.0 GiB in another.
MIB = 1024**2
GIB = 1024**3

# Suffix → (quantity, symbol, scale). Longest suffixes first where one ends another.
SUFFIXES: tuple[tuple[str, str, str, float], ...] = (
    ("_celsius", N_("temperature"), "°C", 1.0),
    ("_watts", N_("power"), "W", 1.0),
    ("_joules", N_("energy"), "kJ", 1e-3),
    ("_bytes", N_("size"), "GiB", 1 / GIB),
    ("_hertz", N_("clock"), "MHz", 1e-6),
    ("_rpm", N_("fan speed"), "RPM", 1.0),
    ("_volts", N_("voltage"), "V", 1.0),
    ("_amperes", N_("current"), "A", 1.0),
    ("_seconds", N_("time"), "s", 1.0),
    ("_width", N_("PCIe link width"), "lanes", 1.0),
    ("_generation", N_("PCIe link generation"), "gen", 1.0),
    ("_depth", N_("queue"), "items", 1.0),
    (":count", N_("count"), "GPUs", 1.0),
    ("_recovery_action", N_("recovery action"), "code", 1.0),  # NVML's numbered verdicts
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


def _counted(stem: str) -> str:
    """What a counter counts, in words: "errors", "dead letters", "failed notifications"."""
    words = stem.split("_")
    if len(words) >= 2 and words[-1] in ("letters", "failed"):
        return f"{words[-2]} {words[-1]}"
    return words[-1]


def _base_unit(name: str, rated: bool) -> Unit:
    counter = name.endswith("_total")
    stem = name.removesuffix("_total")
    for suffix, quantity, symbol, scale in SUFFIXES:
        if stem.endswith(suffix):
            if counter and rated:
                if suffix == "_seconds":  # seconds per second: the share of time busy
                    return Unit(_("busy"), "%", 100.0, percent=True)
                if suffix == "_bytes":
                    return Unit(_("throughput"), "MiB/s", 1 / MIB)
                return Unit(_("{quantity} rate").format(quantity=_(quantity)), f"{symbol}/s", scale)
            return Unit(_(quantity), symbol, scale)
    if stem.endswith(STATES) or name == "up":
        word = stem.rsplit("_", 1)[-1] if name != "up" else "up"
        return Unit(_("{word} (1 = yes)").format(word=word), _("state"), 1.0, state=True)
    if counter:
        what = _counted(stem)
        if rated:
            return Unit(_("{quantity} rate").format(quantity=what), f"{what}/s", 1.0)
        return Unit(what, what, 1.0)
    return Unit(stem.rsplit("_", 1)[-1], "", 1.0)


def unit_of(expr: str) -> Unit:
    """The unit of an expression's value: that of its first metric, a percentage when it divides
    two of the same kind (used/total bytes, errors/packets), and per second under rate()."""
    names = metric_names(expr)
    rated = bool(re.search(r"\b(?:i?rate|deriv)\s*\(", expr))
    if not names:
        return Unit(_("value"), _("state"), 1.0, state=True)  # vector(1): a heartbeat
    units = [_base_unit(n, rated) for n in names]
    divides = "/" in _SELECTORS.sub(" ", _STRINGS.sub(" ", expr)) and len(names) >= 2
    same_kind = divides and (
        units[0].symbol == units[1].symbol or all(n.endswith("_total") for n in names[:2])
    )
    if same_kind or names[0].endswith("_ratio"):
        return Unit(_(PERCENT_WORD), "%", 100.0, percent=True)
    if not rated and re.search(r"\bincrease\s*\(", expr) and names[0].endswith("_total"):
        what = _counted(names[0].removesuffix("_total"))
        return Unit(_("new {what}").format(what=what), what, 1.0)
    return units[0]
