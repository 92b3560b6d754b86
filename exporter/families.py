"""Metric family specs and the per-scrape builder that turns raw samples into families."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

# A raw sample as collection work hands it over: (family name, labels, value). Work units
# return lists of these so that results can be shared by concurrent scrapes while every
# scrape still builds its own fresh families.
Sample = tuple[str, dict[str, str], float]


@dataclass(frozen=True)
class FamilySpec:
    name: str  # full exposed name; counters end in _total
    type: str  # "gauge" or "counter"
    help: str


def specs(*items: tuple[str, str, str]) -> dict[str, FamilySpec]:
    """Specs keyed by name, in declaration order (which is also the exposition order)."""
    return {name: FamilySpec(name, kind, text) for name, kind, text in items}


def build_families(spec_table: dict[str, FamilySpec], samples: Iterable[Sample]) -> list[Metric]:
    """Fresh families for this scrape; families without samples are left out entirely."""
    by_name: dict[str, Metric] = {}
    for name, labels, value in samples:
        family = by_name.get(name)
        if family is None:
            spec = spec_table[name]
            base = name[: -len("_total")] if spec.type == "counter" else name
            family = by_name[name] = Metric(base, spec.help, spec.type)
        family.add_sample(name, labels, value)
    return [by_name[name] for name in spec_table if name in by_name]
