"""What a chart shows: a PromQL range asked of Prometheus (for /graph, narrowed to a rig or card)
or an alert's value around the moment it fired with its threshold, drawn by charts.figure."""

from __future__ import annotations

from datetime import tzinfo

from alert_bot.alerts.alert_queries import alert_queries, expression_from_generator_url
from alert_bot.alerts.model import Alert, valid_time
from alert_bot.alerts.render import annotation
from alert_bot.charts.figure import Series, card_words, render_png, series_key, series_label
from alert_bot.i18n import _
from alert_bot.upstream.fetch import UpstreamError
from alert_bot.upstream.prometheus import PrometheusClient
from alert_bot.upstream.units import Unit, unit_of


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


def _narrowed(result: list[dict], narrow: dict[str, str]) -> list[dict]:
    """Only the series with exactly these labels (a /graph asked for one rig or card)."""
    return [r for r in result if all(r["metric"].get(k) == v for k, v in narrow.items())]


def _series(result: list[dict], names: dict[str, str] | None = None) -> list[Series]:
    """Series labelled by card; a card's name from the alert when the query lacks it."""
    out = []
    for r in result:
        metric = dict(r["metric"])
        if names and metric.get("gpu") == names.get("gpu") and not metric.get("name"):
            metric["name"] = names.get("name", "")
        out.append(Series(series_label(metric), r["values"], key=series_key(metric)))
    return out


def query_chart(
    prometheus: PrometheusClient,
    expr: str,
    seconds: float,
    now: float,
    title: str,
    focus: dict[str, str] | None = None,
    timeout: float | None = None,
    zone: tzinfo | None = None,
    narrow: dict[str, str] | None = None,
    subtitle: str = "",
) -> bytes:
    """Query a range and draw it; narrow keeps only the series with those labels."""
    result = prometheus.query_range(expr, now - seconds, now, _step(seconds), timeout)
    result = _narrowed(result, narrow) if narrow else _focused(result, focus)
    return render_png(
        _series(result),
        title,
        now - seconds,
        now,
        unit=unit_of(expr),
        zone=zone,
        subtitle=subtitle,
    )


def alert_title(alert: Alert, unit: Unit) -> str:
    """The alert's summary, or where it is and what it measures in words."""
    summary = annotation(alert.annotations, "summary").strip()
    if summary:
        return summary
    place = card_words(alert.labels)
    name = alert.alertname or _("alert")
    return f"{place} — {unit.quantity}" if place else f"{name} — {unit.quantity}"


def _started(alert: Alert) -> float | None:
    moment = valid_time(alert.starts_at)
    return moment.timestamp() if moment is not None else None


def alert_chart(
    prometheus: PrometheusClient,
    alert: Alert,
    seconds: float,
    now: float,
    timeout: float | None = None,
    zone: tzinfo | None = None,
) -> bytes | None:
    """The chart for a firing alert: the value its rule names (value and threshold when it
    compares one with the other; alert_queries says where they come from), shaded from when it
    started, or None when it carries no query at all."""
    queries = alert_queries(alert)
    if queries is None:
        return None
    labels = alert.labels
    start, step = now - seconds, _step(seconds)
    firing_since = _started(alert)
    if queries.compares:
        try:
            values = _focused(
                prometheus.query_range(queries.value, start, now, step, timeout), labels
            )
        except UpstreamError:
            values = []
        if values:
            series = _series(values, labels)
            threshold = queries.threshold_number
            if threshold is None and queries.threshold:
                try:
                    limits = prometheus.query_range(queries.threshold, start, now, step, timeout)
                except UpstreamError:
                    limits = []
                for item in _series(_focused(limits, labels)[:3], labels):
                    item.label, item.dashed = (
                        _("threshold · {series}").format(series=item.label),
                        True,
                    )
                    series.append(item)
            return render_png(
                series,
                alert_title(alert, queries.unit),
                start,
                now,
                threshold,
                unit=queries.unit,
                zone=zone,
                subtitle=queries.value,
                firing_since=firing_since,
            )
    # No comparison, or no data for the value: the alert's own expression as it is.
    expr = expression_from_generator_url(alert.generator_url) or queries.value
    unit = queries.unit if expr == queries.value else unit_of(expr)
    result = prometheus.query_range(expr, start, now, step, timeout)
    return render_png(
        _series(_focused(result, labels), labels),
        alert_title(alert, unit),
        start,
        now,
        unit=unit,
        zone=zone,
        subtitle=expr,
        firing_since=firing_since,
    )
