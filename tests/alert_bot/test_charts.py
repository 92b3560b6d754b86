"""Charts: reading an alert's expression (the value and the threshold it is compared with), its
unit, and a drawing a person can read on a phone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from alert_bot import i18n
from alert_bot.alerts.alert_queries import (
    CHART_ANNOTATIONS,
    alert_queries,
    comparison_sides,
    expression_from_generator_url,
)
from alert_bot.alerts.model import Alert
from alert_bot.charts.figure import PALETTE, Series, chart_figure, render_png, series_label
from alert_bot.charts.queries import alert_chart, alert_title
from alert_bot.upstream.units import unit_of
from tests.support import REPO

SHIPPED_STYLE = """(
  rigwatch_gpu_temperature_celsius
  >= on (job, instance, gpu, uuid) group_left ()
  (rigwatch_gpu_temperature_slowdown_threshold_celsius - 5)
)
* on (job, instance, gpu, uuid) group_left (name) rigwatch_gpu_info"""


@pytest.mark.parametrize(
    ("expr", "sides"),
    [
        (
            SHIPPED_STYLE,
            (
                "rigwatch_gpu_temperature_celsius",
                "(rigwatch_gpu_temperature_slowdown_threshold_celsius - 5)",
            ),
        ),
        ("rigwatch_gpu_temperature_celsius > 80", ("rigwatch_gpu_temperature_celsius", "80")),
        (
            'sum by (job) (rate(x{a!="b",c=~"d"}[5m])) >= bool 0.5',
            ('sum by (job) (rate(x{a!="b",c=~"d"}[5m]))', "0.5"),
        ),
        (
            'predict_linear(a{m="/"}[6h], 86400) < 0 and b < 1e9',
            ('predict_linear(a{m="/"}[6h], 86400)', "0"),
        ),
        ('x{l=">"} != 1', ('x{l=">"}', "1")),
        # What follows a top-level unless/and only filters: the value is before it.
        ("(a / on (d) b < 0.05)\nunless on (d)\nc == 1", ("a / on (d) b", "0.05")),
        ("max by (d) (a) unless on (d) b and on (j) (c == 1)", None),
        ("vector(1)", None),
        ("rate(x[5m])", None),
    ],
)
def test_comparison_sides(expr, sides):
    assert comparison_sides(expr) == sides


def test_expression_from_generator_url():
    url = "http://prom:9090/graph?g0.expr=rigwatch_gpu_up+%3D%3D+0&g0.tab=1"
    assert expression_from_generator_url(url) == "rigwatch_gpu_up == 0"
    assert expression_from_generator_url("") is None
    assert expression_from_generator_url("http://prom:9090/graph?g0.tab=1") is None


def test_render_png_needs_data():
    with pytest.raises(ValueError):
        render_png([Series("empty", [])], "nothing", 0, 3600)
    png = render_png([Series("one point", [(1800.0, 42.0)])], "t", 0, 3600, threshold=40)
    assert png.startswith(b"\x89PNG")


def test_a_started_bot_has_not_loaded_matplotlib_numpy_or_jinja2():
    """matplotlib and numpy are ~50 MiB of RSS and jinja2 ~7: loaded on the first chart and
    with a user template, not at startup (the bot's idle RSS went from ~87 to ~44 MiB)."""
    probe = """
import json, sys
import alert_bot.cli, alert_bot.app
from alert_bot.alerts.render import AlertRenderer, LinkSettings
AlertRenderer(LinkSettings("", "", ""))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"matplotlib", "numpy", "jinja2"})
print(json.dumps(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# --- charts a person reads ----------------------------------------------------------------

NOW = 1_764_000_000.0
ZONE = ZoneInfo("Asia/Yekaterinburg")  # UTC+5 all year: times on the axis are easy to check


def _rules() -> list[dict]:
    rules = []
    for path in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


class AnyData:
    """A Prometheus that has an hour of samples for any query, for a card and a host."""

    def __init__(self):
        self.queries: list[str] = []

    def query_range(self, expr, start, end, step, timeout=None):
        self.queries.append(expr)
        times = [start + step * i for i in range(int((end - start) / step) + 1)]
        metric = {"rig": "rig1", "instance": "rig1:9835", "gpu": "0", "uuid": "u0"}
        return [{"metric": metric, "values": [(t, 0.5 + (t - start) / 10000) for t in times]}]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_every_shipped_alert_charts_with_a_unit_and_a_title_in_words(rule):
    url = "http://prom:9090/graph?g0.expr=" + urllib.parse.quote(rule["expr"])
    labels = {"alertname": rule["alert"], "rig": "rig1", "gpu": "0", "uuid": "u0"}
    chart = {k: v for k, v in rule["annotations"].items() if k in CHART_ANNOTATIONS}
    alert = Alert("firing", labels, chart, starts_at="", generator_url=url)
    unit = alert_queries(alert).unit
    assert unit.symbol, rule["alert"]
    assert not re.search(r"[{}\[\]]|rigwatch_|by \(", unit.axis_label())
    title = alert_title(alert, unit)
    assert "rigwatch_" not in title and "(" not in title.replace("(1 = yes)", "")
    png = alert_chart(AnyData(), alert, 3600, NOW, zone=ZONE)
    assert png is not None and png.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("expr", "symbol", "scaled"),
    [
        ("rigwatch_gpu_temperature_celsius", "°C", 83.0),
        ("rigwatch_gpu_power_usage_watts", "W", 83.0),
        ("rigwatch_gpu_memory_used_bytes", "GiB", 83 / 2**30),
        ("rigwatch_gpu_utilization_ratio", "%", 8300.0),
        ("rigwatch_host_memory_available_bytes / rigwatch_host_memory_total_bytes", "%", 8300.0),
        ('rate(rigwatch_host_swap_in_bytes_total{x="/"}[5m])', "MiB/s", 83 / 2**20),
        ("increase(rigwatch_gpu_xid_errors_total[30m])", "errors", 83.0),
        ("rigwatch_gpu_up == 0", "state", 83.0),
    ],
)
def test_units_from_metric_suffixes(expr, symbol, scaled):
    unit = unit_of(expr)
    assert unit.symbol == symbol
    assert unit.scale * 83 == pytest.approx(scaled)


def _drawn(series, **kwargs):
    figure = chart_figure(series, "title", NOW - kwargs.pop("seconds", 3600), NOW, **kwargs)
    figure.canvas.draw()
    return figure


def _points(seconds: float, value) -> list[tuple[float, float]]:
    step = seconds / 240
    return [(NOW - seconds + i * step, value(i)) for i in range(241)]


def _overlaps(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:], strict=False))


def test_two_days_of_time_labels_do_not_overlap_and_are_in_the_owner_zone():
    series = [Series("GPU 0", _points(2 * 86400, lambda i: 60 + i % 7), key="rig1|0")]
    figure = _drawn(
        series, seconds=2 * 86400, unit=unit_of("rigwatch_gpu_temperature_celsius"), zone=ZONE
    )
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    labels = [t for t in axes.get_xticklabels() if t.get_text()]
    assert len(labels) >= 3
    assert not _overlaps([t.get_window_extent(renderer) for t in labels])
    assert "Asia/Yekaterinburg" in axes.get_xlabel()
    assert axes.get_ylabel() == "temperature (°C)"


def test_a_nearly_flat_ratio_has_no_offset_and_stays_on_a_percent_scale():
    # /graph disk: 69.991 % ± 0.001 % used to read "1e-5+6.999e-1" over the axis.
    flat = [Series("rig1", _points(7 * 86400, lambda i: 0.69991 + 1e-5 * (i % 2)))]
    axes = _drawn(
        flat,
        seconds=7 * 86400,
        unit=unit_of(
            "1 - rigwatch_host_filesystem_avail_bytes / rigwatch_host_filesystem_size_bytes"
        ),
    ).axes[0]
    assert axes.yaxis.get_offset_text().get_text() == ""
    assert axes.get_ylim() == (0.0, 100.0)
    assert axes.get_ylabel().endswith("(%)")
    # 3 % → 5 % of memory is not a spike: the axis still spans 0-100 %.
    step = [Series("rig1", _points(3600, lambda i: 0.03 if i < 200 else 0.05))]
    assert _drawn(step, unit=unit_of("rigwatch_gpu_utilization_ratio")).axes[0].get_ylim() == (
        0.0,
        100.0,
    )


def test_legend_under_the_plot_firing_window_and_labelled_threshold():
    series = [
        Series(
            f"GPU {n} (RTX 4090) on rig1",
            _points(3600, lambda i, n=n: 70 + n + i / 20),
            key=f"rig1|{n}",
        )
        for n in range(6)
    ]
    figure = _drawn(
        series,
        unit=unit_of("rigwatch_gpu_temperature_celsius"),
        threshold=80.0,
        zone=ZONE,
        firing_since=NOW - 1200,
    )
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend = figure.legends[0].get_window_extent(renderer)
    plot = axes.get_window_extent(renderer)
    assert legend.y1 <= plot.y0  # below the plot: it never covers a line
    texts = [t.get_text() for t in axes.texts]
    assert "threshold 80 °C" in texts
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    firing = datetime.fromtimestamp(NOW - 1200, ZONE).strftime("%H:%M")
    assert f"firing since {firing}" in labels
    assert "GPU 0 (RTX 4090) on rig1" in labels


def test_one_card_keeps_its_colour_across_charts():
    def colours(keys):
        series = [Series(k, _points(3600, lambda i: 1.0), key=k) for k in keys]
        lines = _drawn(series).axes[0].get_lines()
        return {line.get_label(): line.get_color() for line in lines}

    first = colours(["rig1|0", "rig1|1", "rig2|0"])
    second = colours(["rig2|0", "rig1|1"])
    assert second["rig2|0"] == first["rig2|0"] and second["rig1|1"] == first["rig1|1"]


def test_eight_cards_on_one_rig_are_eight_clearly_different_colours():
    for rig in ("rig1", "rig2", "miner-a"):
        keys = [f"{rig}|{gpu}" for gpu in range(8)]
        series = [Series(k, _points(3600, lambda i: 1.0), key=k) for k in keys]
        colours = [line.get_color() for line in _drawn(series).axes[0].get_lines()]
        # All eight of Okabe and Ito's colour-blind-safe set, each once (the old palette,
        # picked by a hash of the key, gave two cards of one rig the same or near purples).
        assert sorted(c.lower() for c in colours) == sorted(c.lower() for c in PALETTE)


def test_cards_of_two_rigs_that_would_share_a_colour_get_different_ones():
    keys = [f"{rig}|{gpu}" for rig in ("rig1", "rig2") for gpu in range(4)]
    series = [Series(k, _points(3600, lambda i: 1.0), key=k) for k in keys]
    colours = [line.get_color() for line in _drawn(series).axes[0].get_lines()]
    assert len(set(colours)) == 8


def test_a_gap_in_the_data_is_drawn_as_a_gap():
    """Ten minutes without samples (Prometheus down) break the line; no straight segment
    joins the last sample before to the first after."""
    points = [(NOW - 3600 + i * 15, 50.0) for i in range(120)]
    points += [(NOW - 1200 + i * 15, 70.0) for i in range(80)]
    line = _drawn([Series("GPU 0", points, key="rig1|0")]).axes[0].get_lines()[0]
    ys = list(line.get_ydata())
    breaks = [i for i, y in enumerate(ys) if y != y]
    assert len(breaks) == 1
    assert ys[breaks[0] - 1] == 50.0 and ys[breaks[0] + 1] == 70.0
    steady = [(NOW - 3600 + i * 15, 50.0) for i in range(240)]
    line = _drawn([Series("GPU 0", steady, key="rig1|0")]).axes[0].get_lines()[0]
    assert all(y == y for y in line.get_ydata())


def test_dates_on_the_time_axis_are_in_the_chats_language():
    series = [Series("GPU 0", _points(3 * 86400, lambda i: 60.0), key="rig1|0")]
    unit = unit_of("rigwatch_gpu_temperature_celsius")

    def labels() -> str:
        axes = _drawn(series, seconds=3 * 86400, unit=unit, zone=ZONE).axes[0]
        ticks = [t.get_text() for t in axes.get_xticklabels()]
        return " ".join([*ticks, axes.xaxis.get_offset_text().get_text()])

    month = datetime.fromtimestamp(NOW, ZONE).strftime("%b")
    assert month in labels()
    i18n.use("ru")
    try:
        russian = labels()
    finally:
        i18n.use("en")
    assert month not in russian
    assert re.search("янв|фев|мар|апр|мая|июн|июл|авг|сен|окт|ноя|дек", russian)


def test_series_are_named_by_card_not_by_instance():
    metric = {
        "rig": "rig1",
        "instance": "10.0.0.5:9835",
        "gpu": "0",
        "uuid": "u",
        "name": "NVIDIA GeForce RTX 4090",
    }
    assert series_label(metric) == "GPU 0 (RTX 4090) on rig1"
    assert series_label({"rig": "rig1", "instance": "10.0.0.5:9835"}) == "rig1"
    assert series_label({"instance": "10.0.0.5:9835", "job": "x"}) == "10.0.0.5:9835"


def test_an_alert_chart_is_titled_by_its_summary_or_its_card():
    unit = unit_of("rigwatch_gpu_temperature_celsius")
    labels = {
        "alertname": "GpuTemperatureCritical",
        "rig": "rig1",
        "gpu": "0",
        "name": "NVIDIA GeForce RTX 4090",
    }
    assert alert_title(Alert("firing", labels, {}, ""), unit) == (
        "GPU 0 (RTX 4090) on rig1 — temperature"
    )
    summary = {"summary": "GPU 0 on rig1 is at 96 °C"}
    assert alert_title(Alert("firing", labels, summary, ""), unit) == summary["summary"]


def test_timezone_setting_names_an_iana_zone_or_the_machines(tmp_path, monkeypatch):
    from alert_bot.config import time_zone

    assert time_zone("Europe/Moscow").key == "Europe/Moscow"
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert time_zone("").key == "Asia/Tokyo"
