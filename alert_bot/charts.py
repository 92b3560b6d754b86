"""PNG charts of PromQL over time (matplotlib, headless), for critical alerts and /graph.

matplotlib (with numpy) is imported on the first chart, not with this module: it is most of
the bot's memory (~50 of ~87 MiB), and a bot that never draws should not carry it.
"""

from __future__ import annotations

import io
import re
import textwrap
import threading
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone

from alert_bot.upstream import PrometheusClient, UpstreamError

MAX_SERIES = 12
_render_lock = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe
_NUMBER = re.compile(r"^\s*\(?\s*(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*\)?\s*$", re.IGNORECASE)
_MODIFIERS = re.compile(
    r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:group_(?:left|right)\s*(?:\([^)]*\))?\s*)?",
)
_OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_SET_OPERATOR = re.compile(r"\s+(?:and|or|unless)\s+(?:(?:on|ignoring)\s*\([^)]*\)\s*)?")
_LEGEND_LABELS = ("rig", "instance", "gpu", "name", "mountpoint", "chip", "sensor", "device")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    dashed: bool = False


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL that Prometheus put in an alert's generatorURL (g0.expr)."""
    if not url:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    values = query.get("g0.expr")
    return values[0] if values and values[0].strip() else None


def comparison_sides(expr: str) -> tuple[str, str] | None:
    """For "value >= on(...) group_left() threshold" (at the outermost comparison, wherever
    it is nested): ("value", "threshold"). An alert's expression filters to the samples past
    the threshold; the chart should show the value and the threshold, not only the filter."""
    depth = 0
    quote = ""
    in_braces = 0
    best: tuple[int, int, str] | None = None  # (depth, position, operator)
    opened: list[int] = []
    group_start: dict[int, int] = {}
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
        elif char in "{[":
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
                index += len(operator)
                continue
        index += 1
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


def series_label(metric: dict[str, str]) -> str:
    parts = [f"{name}={metric[name]}" for name in _LEGEND_LABELS if metric.get(name)]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__"][:3]
    return ", ".join(parts) or metric.get("__name__", "value")


def render_png(
    series: list[Series],
    title: str,
    start: float,
    end: float,
    threshold: float | None = None,
) -> bytes:
    """A line chart of up to MAX_SERIES series; raises ValueError when there is nothing to plot."""
    series = [s for s in series if s.points][:MAX_SERIES]
    if not series:
        raise ValueError("no data to plot")
    with _render_lock:
        # Agg draws to memory without a display; importing the backend directly never touches
        # pyplot's backend selection, so no global matplotlib.use() is needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.dates import DateFormatter
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        for item in series:
            times = [datetime.fromtimestamp(t, timezone.utc) for t, _ in item.points]
            axes.plot(
                times,
                [v for _, v in item.points],
                label=item.label,
                linewidth=1.2 if item.dashed else 1.8,
                linestyle="--" if item.dashed else "-",
                marker="." if len(item.points) < 30 else None,
            )
        if threshold is not None:
            axes.axhline(
                threshold,
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"threshold {threshold:g}",
            )
        axes.set_xlim(
            datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc)
        )
        axes.set_title("\n".join(textwrap.wrap(title, 90)[:2]), fontsize=9)
        axes.grid(True, alpha=0.3)
        time_format = "%H:%M" if end - start <= 86400 else "%m-%d %H:%M"
        axes.xaxis.set_major_formatter(DateFormatter(time_format, tz=timezone.utc))
        axes.set_xlabel("UTC")
        axes.legend(fontsize=7, loc="best")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _focused(result: list[dict], focus: dict[str, str] | None) -> list[dict]:
    """Only the series agreeing with the focus labels (when any do), so an alert's chart shows
    its own card rather than every card on every rig."""
    if not focus:
        return result
    matching = [
        r
        for r in result
        if all(focus[k] == v for k, v in r["metric"].items() if k in focus and k != "__name__")
    ]
    return matching or result


def _step(seconds: float) -> float:
    return max(1.0, round(seconds / 240))


def query_chart(
    prometheus: PrometheusClient,
    expr: str,
    seconds: float,
    now: float,
    title: str,
    focus: dict[str, str] | None = None,
    timeout: float | None = None,
) -> bytes:
    """Query a range and draw it."""
    result = prometheus.query_range(expr, now - seconds, now, _step(seconds), timeout)
    series = [Series(series_label(r["metric"]), r["values"]) for r in _focused(result, focus)]
    return render_png(series, title, now - seconds, now)


def alert_chart(
    prometheus: PrometheusClient,
    alert: dict,
    seconds: float,
    now: float,
    timeout: float | None = None,
) -> bytes | None:
    """The chart for a firing alert's own expression (value and threshold when it compares
    one with the other), or None when the alert carries no expression."""
    expr = expression_from_generator_url(alert.get("generatorURL", ""))
    if expr is None:
        return None
    name = alert["labels"].get("alertname", "alert")
    labels = alert["labels"]
    sides = comparison_sides(expr)
    if sides is not None:
        value_expr, threshold_expr = sides
        start, step = now - seconds, _step(seconds)
        try:
            values = _focused(prometheus.query_range(value_expr, start, now, step, timeout), labels)
        except UpstreamError:
            values = []
        if values:
            series = [Series(series_label(r["metric"]), r["values"]) for r in values]
            threshold = None
            number = _NUMBER.match(threshold_expr)
            if number:
                threshold = float(number.group(1))
            else:
                try:
                    limits = prometheus.query_range(threshold_expr, start, now, step, timeout)
                except UpstreamError:
                    limits = []
                for r in _focused(limits, labels)[:3]:
                    series.append(
                        Series("threshold " + series_label(r["metric"]), r["values"], True)
                    )
            return render_png(series, f"{name}: {value_expr}", start, now, threshold)
    return query_chart(prometheus, expr, seconds, now, f"{name}: {expr}", labels, timeout)
