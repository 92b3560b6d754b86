"""What every rigwatch dashboard has around its panels: the datasource and filter variables,
the link between the dashboards, and the rendering to the JSON Grafana provisions."""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

from .panels import DATASOURCE
from .queries import HOST

DATASOURCE_UID = "rigwatch-prometheus"
# The schema the panel options here are written in (Grafana 10); Grafana migrates from it.
SCHEMA_VERSION = 38
ALL = models.VariableOption(selected=True, text=["All"], value=["$__all"])


def query_variable(name: str, label: str, query: str) -> builders.QueryVariable:
    return (
        builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        # A plain string: the form every Grafana version reads for Prometheus variables.
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.NUMERICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(ALL)
        .options([])
        .hide(models.VariableHide.DONT_HIDE)
    )


def variables(with_gpu: bool) -> list[builders.QueryVariable | builders.DatasourceVariable]:
    found: list[builders.QueryVariable | builders.DatasourceVariable] = [
        builders.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(models.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
        .hide(models.VariableHide.DONT_HIDE),
        query_variable("job", "Job", "label_values(rigwatch_exporter_build_info, job)"),
        query_variable(
            "rig", "Rig", 'label_values(rigwatch_exporter_build_info{job=~"$job"}, rig)'
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(rigwatch_exporter_build_info{job=~"$job", rig=~"$rig"}, instance)',
        ),
    ]
    if with_gpu:
        found.append(
            query_variable("gpu", "GPU", f"label_values(rigwatch_gpu_info{{{HOST}}}, gpu)")
        )
    return found


def dashboard(uid: str, title: str, description: str, *, with_gpu: bool) -> builders.Dashboard:
    """An empty rigwatch dashboard; add rows and panels with with_row and with_panel."""
    return (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["rigwatch"])
        .timezone("browser")
        .readonly()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .version(1)
        .time("now-6h", "now")
        .annotations([])
        .variables(variables(with_gpu))
        .link(
            builders.DashboardLink("rigwatch")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["rigwatch"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )


def render(board: builders.Dashboard) -> str:
    """The dashboard as the JSON text committed under grafana/dashboards/."""
    model = board.build()
    model.schema_version = SCHEMA_VERSION
    # Panel ids must be unique within a dashboard; number them in the order they appear.
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    for variable in model.templating.list_val or []:
        # The datasource variable builder has no setters for these; set as Grafana saves them.
        if variable.type_val == models.VariableType.DATASOURCE:
            variable.refresh = models.VariableRefresh.ON_DASHBOARD_LOAD
            variable.options = []
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    for variable in data["templating"]["list"]:
        # The SDK has no field for a query variable's definition, the text Grafana's variable
        # list shows for it; it is the query itself.
        if variable["type"] == "query":
            variable["definition"] = variable["query"]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
