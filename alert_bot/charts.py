"""PNG charts of PromQL over time (matplotlib, headless), for critical alerts and /graph."""

from __future__ import annotations

import io
import re
import threading
import urllib.parse
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.dates import DateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from alert_bot.upstream import PrometheusClient  # noqa: E402

MAX_SERIES = 12
_render_lock = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe
_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)\s*(?:bool\s+)?(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*$")
_LEGEND_LABELS = ("rig", "instance", "gpu", "name", "mountpoint", "chip", "sensor", "device")


def expression_from_generator_url(url: str) -> str | None:
    """The PromQL that Prometheus put in an alert's generatorURL (g0.expr)."""
    if not url:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    values = query.get("g0.expr")
    return values[0] if values and values[0].strip() else None


def split_threshold(expr: str) -> tuple[str, float | None]:
    """ "x > 85" → ("x", 85.0): plot the value and draw the threshold, rather than plotting only
    the samples that passed the filter. Only a comparison with a number at the outermost level
    counts; anything else is plotted as written."""
    match = _COMPARISON.search(expr)
    if not match:
        return expr, None
    left = expr[: match.start()]
    depth = 0
    for char in left:
        depth += char in "([{"
        depth -= char in ")]}"
    if depth != 0 or left.count('"') % 2:
        return expr, None
    return left.strip(), float(match.group(2))


def series_label(metric: dict[str, str]) -> str:
    parts = [f"{name}={metric[name]}" for name in _LEGEND_LABELS if metric.get(name)]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__"][:3]
    return ", ".join(parts) or metric.get("__name__", "value")


def render_png(
    series: list[tuple[str, list[tuple[float, float]]]],
    title: str,
    threshold: float | None = None,
) -> bytes:
    """A line chart of up to MAX_SERIES series; raises ValueError when there is nothing to plot."""
    series = [(label, points) for label, points in series if points][:MAX_SERIES]
    if not series:
        raise ValueError("no data to plot")
    with _render_lock:
        figure = Figure(figsize=(8, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        for label, points in series:
            times = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
            axes.plot(times, [v for _, v in points], label=label, linewidth=1.5)
        if threshold is not None:
            axes.axhline(
                threshold,
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"threshold {threshold:g}",
            )
        axes.set_title(title[:120], fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=timezone.utc))
        axes.set_xlabel("UTC")
        axes.legend(fontsize=7, loc="best")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()


def query_chart(
    prometheus: PrometheusClient,
    expr: str,
    seconds: float,
    now: float,
    title: str,
    threshold: float | None = None,
    focus: dict[str, str] | None = None,
) -> bytes:
    """Query a range and draw it. focus: keep only series agreeing with these labels (when any
    do), so an alert's chart shows its own card rather than every card on every rig."""
    step = max(1.0, round(seconds / 240))
    result = prometheus.query_range(expr, now - seconds, now, step)
    if focus:
        matching = [
            r
            for r in result
            if all(focus[k] == v for k, v in r["metric"].items() if k in focus and k != "__name__")
        ]
        result = matching or result
    return render_png([(series_label(r["metric"]), r["values"]) for r in result], title, threshold)


def alert_chart(
    prometheus: PrometheusClient, alert: dict, seconds: float, now: float
) -> bytes | None:
    """The chart for a firing alert's own expression, or None when it has none."""
    expr = expression_from_generator_url(alert.get("generatorURL", ""))
    if expr is None:
        return None
    plotted, threshold = split_threshold(expr)
    title = f"{alert['labels'].get('alertname', 'alert')}: {plotted}"
    return query_chart(prometheus, plotted, seconds, now, title, threshold, alert["labels"])
