"""Drawing a chart (matplotlib, headless): series over time in stable colours, gaps where data is
missing, the firing threshold as a line, months and axis words in the bot's language, the
owner's time zone on the axis; PNG bytes out.

matplotlib (with numpy) is imported on the first chart, not with this module: it is most of
the bot's memory (~50 of ~87 MiB), and a bot that never draws should not carry it."""

from __future__ import annotations

import io
import json
import re
import textwrap
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, ParamSpec

from alert_bot.i18n import N_, _
from alert_bot.upstream.units import Unit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_SERIES = 12

P = ParamSpec("P")

_render_lock = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe

_LEGEND_LABELS = ("rig", "instance", "gpu", "name", "mountpoint", "chip", "sensor", "device")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    dashed: bool = False
    key: str = ""  # the card or host it is about: its colour (the label when empty)


def short_gpu_name(name: str) -> str:
    """ "NVIDIA GeForce RTX 4090" → "RTX 4090": the words that tell cards apart."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA ", "GeForce "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def card_words(labels: dict[str, str], with_rig: bool = True) -> str:
    """A card or host in words: "GPU 0 (RTX 4090) on rig1", "rig1 /", "rig1"."""
    rig = labels.get("rig") or labels.get("instance", "")
    gpu = labels.get("gpu", "")
    if gpu:
        name = short_gpu_name(labels.get("name") or labels.get("gpu_name", ""))
        text = _("GPU {gpu}").format(gpu=gpu) + (f" ({name})" if name else "")
        return _("{card} on {rig}").format(card=text, rig=rig) if rig and with_rig else text
    extra = [labels[k] for k in ("mountpoint", "chip", "sensor", "device") if labels.get(k)]
    return " ".join([rig, *extra]).strip()


def series_key(metric: dict[str, str]) -> str:
    """Who a series is about (the card, or the host and its part), for its colour: the same
    card has the same colour on every chart."""
    parts = [metric.get("rig") or metric.get("instance", "")]
    parts += [metric.get(k, "") for k in ("gpu", "mountpoint", "chip", "sensor", "device")]
    key = "|".join(parts)
    return key if key.strip("|") else json.dumps(metric, sort_keys=True)


def series_label(metric: dict[str, str]) -> str:
    words = card_words(metric)
    if words:
        return words
    parts = [f"{name}={metric[name]}" for name in _LEGEND_LABELS if metric.get(name)]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__"][:3]
    return ", ".join(parts) or metric.get("__name__", "value")


# Okabe and Ito's colour-blind-safe set, their yellow (too pale on white) swapped for grey:
# eight cards on one rig stay apart, for every kind of colour vision.
PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#000000",  # black
    "#999999",  # grey
)

FIRING_COLOUR = "#d62728"

# Month abbreviations as strftime writes them in the C locale, and their translations
# (matplotlib's tick labels are strftime's; the bot never changes the process locale).
MONTHS = {
    "Jan": N_("Jan"),
    "Feb": N_("Feb"),
    "Mar": N_("Mar"),
    "Apr": N_("Apr"),
    "May": N_("May"),
    "Jun": N_("Jun"),
    "Jul": N_("Jul"),
    "Aug": N_("Aug"),
    "Sep": N_("Sep"),
    "Oct": N_("Oct"),
    "Nov": N_("Nov"),
    "Dec": N_("Dec"),
}

_MONTH = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")


def colour_for(key: str) -> str:
    """A card's own colour, the same on every chart: the rig picks where in the palette its
    cards start and GPU n takes the n-th colour from there, so one rig's eight cards never
    share one; anything else a colour from its name."""
    parts = key.split("|")
    if len(parts) > 1 and parts[1].isdigit():
        start = zlib.crc32(parts[0].encode())
        return PALETTE[(start + int(parts[1])) % len(PALETTE)]
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def chart_colours(keys: list[str]) -> dict[str, str]:
    """A colour per key, all different while there are no more keys than colours: each
    keeps its own colour (colour_for) unless an earlier one took it, then the next free one."""
    colours: dict[str, str] = {}
    for key in keys:
        if key in colours:
            continue
        wanted = colour_for(key)
        taken = set(colours.values())
        if wanted in taken and len(taken) < len(PALETTE):
            start = PALETTE.index(wanted)
            wanted = next(
                PALETTE[(start + i) % len(PALETTE)]
                for i in range(len(PALETTE))
                if PALETTE[(start + i) % len(PALETTE)] not in taken
            )
        colours[key] = wanted
    return colours


def with_gaps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points with a NaN put in each gap much longer than the usual spacing (Prometheus
    was down, the rig was off): matplotlib breaks the line there instead of drawing a straight
    line across time nobody measured."""
    if len(points) < 3:
        return points
    spacings = sorted(b[0] - a[0] for a, b in zip(points, points[1:], strict=False))
    usual = spacings[len(spacings) // 2]
    out = [points[0]]
    for before, after in zip(points, points[1:], strict=False):
        if after[0] - before[0] > 2.5 * usual:
            out.append(((before[0] + after[0]) / 2, float("nan")))
        out.append(after)
    return out


def _translated_months(text: str) -> str:
    return _MONTH.sub(lambda match: _(MONTHS[match.group(1)]), text)


def _y_limits(values: list[float], unit: Unit, threshold: float | None) -> tuple[float, float]:
    """Percentages on 0-100 (3 % → 5 % must not look like a spike); states on 0-1; else the
    data with room, never a span so thin that noise fills the chart."""
    if unit.percent:
        top = max([100.0, *values, *([threshold] if threshold is not None else [])])
        return 0.0, top * 1.02 if top > 100 else 100.0
    if unit.state:
        return -0.1, 1.1
    shown = values + ([threshold] if threshold is not None else [])
    low, high = min(shown), max(shown)
    span = max(high - low, abs(high) * 0.1, 1.0)
    pad = span * 0.1
    bottom = low - pad
    if low >= 0 and bottom < 0:
        bottom = 0.0
    return bottom, high + pad


def chart_figure(
    series: list[Series],
    title: str,
    start: float,
    end: float,
    threshold: float | None = None,
    unit: Unit | None = None,
    zone: tzinfo | None = None,
    subtitle: str = "",
    firing_since: float | None = None,
) -> Figure:
    """A line chart of up to MAX_SERIES series, readable on a phone: the title in words (the
    PromQL, if any, small under it), the unit on the y axis, times in the owner's time zone,
    the firing window shaded and the threshold labelled, the legend under the plot.
    Raises ValueError when there is nothing to plot; the caller holds _render_lock."""
    series = [s for s in series if s.points][:MAX_SERIES]
    if not series:
        raise ValueError("no data to plot")
    unit = unit or Unit("value", "")
    zone = zone or timezone.utc
    # Agg draws to memory without a display; importing the backend directly never touches
    # pyplot's backend selection, so no global matplotlib.use() is needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    class _LocalDates(ConciseDateFormatter):
        """matplotlib's concise dates, day before month ("4 Dec"), months in the chat's
        language."""

        def __init__(self, locator: AutoDateLocator, tz: tzinfo) -> None:
            super().__init__(
                locator,
                tz=tz,
                zero_formats=["", "%Y", "%b", "%d %b", "%H:%M", "%H:%M"],
                offset_formats=["", "%Y", "%b %Y", "%d %b %Y", "%d %b %Y", "%d %b %Y %H:%M"],
            )

        def format_ticks(self, values: list) -> list[str]:
            return [_translated_months(label) for label in super().format_ticks(values)]

        def get_offset(self) -> str:
            return _translated_months(super().get_offset())

    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    figure = Figure(figsize=(8, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)

    def when(t: float) -> datetime:
        return datetime.fromtimestamp(t, zone)

    values: list[float] = []
    colours = chart_colours([item.key or item.label for item in series])
    for item in series:
        points = with_gaps([(float(t), float(v)) for t, v in item.points])
        scaled = [v * unit.scale for _, v in points]
        values += [v for v in scaled if v == v]  # NaN (a gap) is not a value
        axes.plot(
            [when(t) for t, _ in points],
            scaled,
            label=item.label,
            color=colours[item.key or item.label],
            linewidth=1.2 if item.dashed else 2.0,
            linestyle="--" if item.dashed else "-",
            alpha=0.7 if item.dashed else 1.0,
            marker="." if len(item.points) < 30 else None,
        )
        if item.dashed:  # a threshold series: labelled on the line, not only in the legend
            axes.annotate(
                _("threshold {value}").format(value=unit.format(item.points[-1][1])),
                xy=(0.01, scaled[-1]),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=8,
                color=colours[item.key or item.label],
            )
    scaled_threshold = threshold * unit.scale if threshold is not None else None
    if firing_since is not None and firing_since < end:
        axes.axvspan(
            when(max(firing_since, start)),
            when(end),
            color=FIRING_COLOUR,
            alpha=0.08,
            label=_("firing since {time}").format(time=f"{when(firing_since):%H:%M}"),
        )
    if scaled_threshold is not None:
        text = _("threshold {value}").format(value=unit.format(threshold))
        axes.axhline(scaled_threshold, color=FIRING_COLOUR, linestyle="--", linewidth=1.2)
        axes.annotate(
            text,
            xy=(0.01, scaled_threshold),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            color=FIRING_COLOUR,
        )
    axes.set_xlim(when(start), when(end))
    axes.set_ylim(*_y_limits(values, unit, scaled_threshold))
    locator = AutoDateLocator(tz=zone, minticks=3, maxticks=7)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(_LocalDates(locator, tz=zone))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axes.yaxis.set_major_formatter(formatter)
    if unit.state:
        axes.set_yticks([0, 1])
    else:
        axes.yaxis.set_major_locator(MaxNLocator(nbins=6))
    axes.set_ylabel(unit.axis_label(), fontsize=9)
    axes.set_xlabel(_("time ({zone})").format(zone=zone_name(zone)), fontsize=8)
    axes.grid(True, alpha=0.3)
    axes.tick_params(labelsize=8)
    figure.suptitle(
        "\n".join(textwrap.wrap(title, 70)[:2]), fontsize=11, x=0.01, ha="left", weight="bold"
    )
    if subtitle:
        short = subtitle if len(subtitle) <= 110 else subtitle[:109] + "…"
        axes.set_title(short, fontsize=7, color="#666666", loc="left")
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(3, len(handles)),
            fontsize=8,
            frameon=False,
        )
    return figure


def _as_png(draw: Callable[P, Figure]) -> Callable[P, bytes]:
    """A drawing function that returns PNG bytes instead of the figure, drawn under
    _render_lock."""

    def render(*args: P.args, **kwargs: P.kwargs) -> bytes:
        with _render_lock:
            figure = draw(*args, **kwargs)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            return buffer.getvalue()

    render.__doc__ = f"The {draw.__name__}() as PNG bytes."
    return render


render_png = _as_png(chart_figure)


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or datetime.now(zone).tzname() or "UTC"
