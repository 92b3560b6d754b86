"""rigwatch's Grafana dashboards as code, built with grafana-foundation-sdk: one module per
dashboard, the queries and panel shapes they share, and the frame around them."""

from __future__ import annotations

from types import ModuleType

from . import card_health, energy, gpu_detail, host_detail, rig_overview
from .dashboard import render

DASHBOARDS: tuple[ModuleType, ...] = (rig_overview, gpu_detail, host_detail, energy, card_health)


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard, exactly as committed."""
    return {module.FILE_NAME: render(module.build()) for module in DASHBOARDS}
