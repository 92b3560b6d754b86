"""Reading an alert's expression for its chart: the value and the threshold it is compared with."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alert_bot.charts import Series, comparison_sides, expression_from_generator_url, render_png
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
from alert_bot.render import AlertRenderer, LinkSettings
AlertRenderer(LinkSettings("", "", ""))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"matplotlib", "numpy", "jinja2"})
print(json.dumps(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
