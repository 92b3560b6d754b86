"""What an alert's chart and its resolved notice's "Now:" line show: the query of the value, the
threshold it is compared with (a number or a query) and the unit.

A shipped rule says so itself, in its annotations (`value_query`, `threshold_query`, `unit`;
prometheus/rules/*.yml, checked by tests/alert_bot/test_alert_queries.py). A rule of the user's
own without them still charts: its expression is read from the alert's generatorURL and the
outermost comparison in it split into the value and the threshold (a scan of the PromQL text,
which cannot know what a rule's author meant; where it finds no comparison the whole
expression is the value and there is no threshold line).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from alert_bot.alerts.model import Alert
from alert_bot.upstream.units import Unit, unit_named, unit_of

_NUMBER = re.compile(r"^\s*\(?\s*(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*\)?\s*$", re.IGNORECASE)
_MODIFIERS = re.compile(
    r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:group_(?:left|right)\s*(?:\([^)]*\))?\s*)?",
)
_OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_SET_OPERATOR = re.compile(r"\s+(?:and|or|unless)\s+(?:(?:on|ignoring)\s*\([^)]*\)\s*)?")


# The annotations a rule tells its chart with (every shipped alert rule has them).
CHART_ANNOTATIONS = ("value_query", "threshold_query", "unit")


@dataclass(frozen=True)
class AlertQueries:
    """What to draw for one alert."""

    value: str  # PromQL of the measured value
    threshold: str | None  # PromQL, or a number as text; None: no threshold line
    unit: Unit
    compares: bool  # the value is compared with a threshold (else it is the whole expression)

    @property
    def threshold_number(self) -> float | None:
        """The threshold when it is a plain number (drawn as a line, not queried)."""
        number = _NUMBER.match(self.threshold or "")
        return float(number.group(1)) if number else None


def alert_queries(alert: Alert) -> AlertQueries | None:
    """From the rule's annotations where it has value_query (and unit, threshold_query), else
    from its expression in generatorURL; None when the alert carries neither."""
    annotations = alert.annotations
    named = _named_unit(annotations.get("unit") or "")
    value = (annotations.get("value_query") or "").strip()
    if value:
        threshold = (annotations.get("threshold_query") or "").strip() or None
        return AlertQueries(value, threshold, named or unit_of(value), threshold is not None)
    expr = expression_from_generator_url(alert.generator_url)
    if expr is None:
        return None
    sides = comparison_sides(expr)
    if sides is None:
        return AlertQueries(expr, None, named or unit_of(expr), compares=False)
    return AlertQueries(sides[0], sides[1], named or unit_of(sides[0]), compares=True)


def _named_unit(name: str) -> Unit | None:
    try:
        return unit_named(name)
    except ValueError:  # no unit annotation: the unit is read from the query's metric names
        return None


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL that Prometheus put in an alert's generatorURL (g0.expr)."""
    if not url:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    values = query.get("g0.expr")
    return values[0] if values and values[0].strip() else None


_TOP_FILTER = re.compile(r"\s(?:and|unless)\s")


def _unquoted(expr: str) -> Iterator[int]:
    """The positions in expr outside quoted strings (a label value may hold any character)."""
    quote = ""
    index = 0
    while index < len(expr):
        char = expr[index]
        if quote:
            if char == "\\":
                index += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        else:
            yield index
        index += 1


def _top_level_filter(expr: str) -> int | None:
    """Where the first "and" or "unless" outside all parentheses starts, if any: what follows
    it only filters the series before it ("... < 0.05) unless readonly == 1")."""
    depth = 0
    for index in _unquoted(expr):
        char = expr[index]
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif depth == 0 and _TOP_FILTER.match(expr, index):
            return index
    return None


def comparison_sides(expr: str) -> tuple[str, str] | None:
    """For "value >= on(...) group_left() threshold" (at the outermost comparison, wherever
    it is nested): ("value", "threshold"). An alert's expression filters to the samples past
    the threshold; the chart should show the value and the threshold, not only the filter.
    Only what comes before a top-level "and"/"unless" is looked at: what follows filters."""
    cut = _top_level_filter(expr)
    return _comparison_sides(expr if cut is None else expr[:cut])


def _comparison_sides(expr: str) -> tuple[str, str] | None:
    depth = 0
    in_braces = 0
    best: tuple[int, int, str] | None = None  # (depth, position, operator)
    opened: list[int] = []
    group_start: dict[int, int] = {}
    skip_to = 0
    for index in _unquoted(expr):
        if index < skip_to:
            continue
        char = expr[index]
        if char in "{[":
            in_braces += 1
        elif char in "}]":
            in_braces -= 1
        elif in_braces == 0 and char == "(":
            opened.append(index)
            depth += 1
        elif in_braces == 0 and char == ")":
            depth -= 1
            if opened:
                opened.pop()
        elif in_braces == 0:
            # Two-character operators come first in _OPERATORS, so ">=" is never read as ">".
            operator = next((op for op in _OPERATORS if expr.startswith(op, index)), None)
            if operator is not None:
                if best is None or depth < best[0]:
                    best = (depth, index, operator)
                    group_start[index] = opened[-1] + 1 if opened else 0
                skip_to = index + len(operator)
    if best is None:
        return None
    depth, position, operator = best
    start = group_start[position]
    # The end of the group: the parenthesis closing the one that opened it.
    level = 0
    end = len(expr)
    for index in range(position, len(expr)):
        if expr[index] == "(":
            level += 1
        elif expr[index] == ")":
            if level == 0:
                end = index
                break
            level -= 1
    left = expr[start:position].strip()
    right = expr[position + len(operator) : end]
    right = _MODIFIERS.sub("", right, count=1).strip()
    # Set operators bind looser than comparisons: "a < 0 and b < 1" compares a with 0.
    left_parts = _SET_OPERATOR.split(left)
    if len(left_parts) > 1 and _balanced(left_parts[-1]):
        left = left_parts[-1].strip()
    right_parts = _SET_OPERATOR.split(right, maxsplit=1)
    if len(right_parts) > 1 and _balanced(right_parts[0]):
        right = right_parts[0].strip()
    if not left or not right:
        return None
    return left, right


def _balanced(text: str) -> bool:
    return text.count("(") == text.count(")")
