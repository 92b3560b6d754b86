"""Metric family specs and the per-scrape builder that turns raw samples into families."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample as ClientSample

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
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        bucket = by_name.get(name)
        if bucket is None:
            bucket = by_name[name] = []
        # prometheus_client's public Sample, without Metric.add_sample()'s per-sample checks
        # (its name prefix and label copying cost four times this on a 1000-sample scrape).
        bucket.append(ClientSample(name, labels, value))
    families = []
    for name, spec in spec_table.items():
        bucket = by_name.get(name)
        if bucket is None:
            continue
        base = name[: -len("_total")] if spec.type == "counter" else name
        family = Metric(base, spec.help, spec.type)
        family.samples = bucket
        families.append(family)
    return families
