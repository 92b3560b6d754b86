"""The panel shapes rigwatch's dashboards are made of (timeseries, stat, table, state timeline),
each with the settings every panel shares: the Prometheus datasource variable, a unit, the
"no data" text and the "not supported on this card" mapping."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
NOT_SUPPORTED = "not supported on this card"
NO_DATA = "no data"
NAN_MAPPING = models.SpecialValueMap(
    options=models.DashboardSpecialValueMapOptions(
        match=models.SpecialValueMatch.NA_N,
        result=models.ValueMappingResult(text=NOT_SUPPORTED),
    )
)
CARD_LEGEND = "{{rig}} GPU {{gpu}}"

Steps = Sequence[tuple[str, float | None]]
"""Threshold steps as (colour, from value); the first starts at None (minus infinity)."""
GREEN: Steps = (("green", None),)

Panel = TypeVar("Panel", timeseries.Panel, stat.Panel, table.Panel, statetimeline.Panel)


@dataclass(frozen=True)
class Query:
    """One query of a panel; ref is its refId, which names it in Grafana's editor."""

    ref: str
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Column:
    """One query of an instant table and the column its value fills.

    Grafana names that column "Value #<refId>" (plain "Value" when the panel has only one
    query), so the rename and the unit are keyed by the query's own id: inserting a column
    shifts nothing else.
    """

    ref: str
    title: str
    unit: str
    expr: str
    hidden: bool = False


def value_field(column: Column, columns: Sequence[Column]) -> str:
    """The name Grafana's Prometheus data source gives the column's values in an instant table."""
    return "Value" if len(columns) == 1 else f"Value #{column.ref}"


def value_mapping(
    options: dict[str, tuple[str, str | None]], *, indexed: bool = False
) -> models.ValueMap:
    """Values shown as text, each as value -> (text, colour or None); indexed keeps their order
    in Grafana's mapping editor."""
    return models.ValueMap(
        options={
            value: models.ValueMappingResult(
                text=text, color=color, index=index if indexed else None
            )
            for index, (value, (text, color)) in enumerate(options.items())
        }
    )


def _target(query: Query, instant: bool) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .ref_id(query.ref)
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
        .datasource(DATASOURCE)
    )
    if instant:
        return target.instant().format(prometheus_models.PromQueryFormat.TABLE)
    return target.range()


def _panel(
    panel: Panel,
    title: str,
    unit: str,
    queries: Sequence[Query],
    *,
    size: tuple[int, int] = (12, 8),
    instant: bool = False,
    description: str = "",
    mappings: Sequence[models.ValueMapping] = (),
    thresholds: Steps = (),
    minimum: float | None = None,
    maximum: float | None = None,
) -> Panel:
    """The settings every panel shares (the panel builders below take them as keyword options);
    size is (width, height) on Grafana's 24-column grid, and the dashboard places panels left
    to right in the order they are added."""
    width, height = size
    panel = (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets([_target(query, instant) for query in queries])
        .span(width)
        .height(height)
        .unit(unit)
        .no_value(NO_DATA)
        .mappings([NAN_MAPPING, *mappings])
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(models.ThresholdsMode.ABSOLUTE)
            .steps([models.Threshold(value, color) for color, value in thresholds or GREEN])
        )
        .color_scheme(
            dashboard_builders.FieldColor().mode(
                models.FieldColorModeId.THRESHOLDS
                if thresholds
                else models.FieldColorModeId.PALETTE_CLASSIC
            )
        )
        .overrides([])
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    return panel


def timeseries_panel(
    title: str, unit: str, queries: Sequence[Query], **options: Any
) -> timeseries.Panel:
    """A graph over time with a table legend of each series' last value."""
    panel = _panel(timeseries.Panel(), title, unit, queries, **options)
    return panel.legend(
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull"])
    ).tooltip(
        common_builders.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def percent_timeseries(title: str, queries: Sequence[Query], **options: Any) -> timeseries.Panel:
    """A timeseries of ratios, drawn on a fixed 0-100 % axis."""
    return timeseries_panel(title, "percentunit", queries, minimum=0, maximum=1, **options)


def stat_panel(
    title: str,
    unit: str,
    queries: Sequence[Query],
    *,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.VALUE_AND_NAME,
    color_mode: common.BigValueColorMode = common.BigValueColorMode.VALUE,
    **options: Any,
) -> stat.Panel:
    """The latest value of each series, as an instant query."""
    panel = _panel(stat.Panel(), title, unit, queries, instant=True, **options)
    return (
        panel.reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        )
        .color_mode(color_mode)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(text_mode)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
    )


def label_stat(
    title: str, query: Query, *, size: tuple[int, int], description: str = ""
) -> stat.Panel:
    """A stat that shows only its legend, for facts carried in labels (names, versions)."""
    return stat_panel(
        title,
        "none",
        [query],
        size=size,
        description=description,
        text_mode=common.BigValueTextMode.NAME,
        color_mode=common.BigValueColorMode.NONE,
    )


def table_panel(
    title: str,
    unit: str,
    columns: Sequence[Column],
    *,
    size: tuple[int, int],
    hide_labels: Sequence[str] = (),
    links: Sequence[dashboard_builders.DashboardLink] = (),
    description: str = "",
) -> table.Panel:
    """An instant table, one row per label set, one value column per query."""
    queries = [Query(column.ref, column.expr) for column in columns]
    panel = _panel(
        table.Panel(), title, unit, queries, size=size, instant=True, description=description
    )
    excluded = {"Time": True, "__name__": True, "job": True, "uuid": True}
    excluded.update({label: True for label in hide_labels})
    excluded.update({value_field(c, columns): True for c in columns if c.hidden})
    for column in columns:
        # Overrides apply after the organize transformation, so they match the new name.
        panel = panel.override_by_name(
            column.title, [models.DynamicConfigValue(id_val="unit", value=column.unit)]
        )
    if links:
        panel = panel.data_links(list(links))
    return (
        panel.show_header(True)
        .cell_height(common.TableCellHeight.SM)
        .with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            models.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": excluded,
                    "renameByName": {value_field(c, columns): c.title for c in columns},
                },
            )
        )
    )


def state_timeline_panel(
    title: str, queries: Sequence[Query], **options: Any
) -> statetimeline.Panel:
    """On/off series drawn as coloured bands over time."""
    panel = _panel(statetimeline.Panel(), title, "bool_on_off", queries, **options)
    return (
        panel.show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )


def data_link(title: str, url: str) -> dashboard_builders.DashboardLink:
    return dashboard_builders.DashboardLink(title).url(url)
