"""Helpers for the exporter's tests: scrape a running exporter and look samples up."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support import http_get

# Every test starts its exporter with this, so recovery happens within a second or two.
FAST_RETRY = "--nvml.retry-max-seconds=0.5"
UUID0 = "GPU-00000000-1111-2222-3333-444444444444"
UUID1 = "GPU-00000001-1111-2222-3333-444444444444"


@dataclass
class Scrape:
    text: str
    families: dict  # family name -> prometheus_client Metric
    samples: dict  # (sample name, frozenset(labels)) -> value

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The value of the one sample named metric whose labels include labels."""
        matches = self.all(metric, **labels)
        assert len(matches) <= 1, f"{metric} {labels}: several samples {matches}"
        return matches[0][1] if matches else None

    def all(self, metric: str, /, **labels: str) -> list[tuple[dict, float]]:
        found = []
        for (sample_name, label_set), value in self.samples.items():
            if sample_name != metric:
                continue
            label_dict = dict(label_set)
            if all(label_dict.get(k) == v for k, v in labels.items()):
                found.append((label_dict, value))
        return found

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse(text: str) -> Scrape:
    families = {}
    samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return Scrape(text, families, samples)


def scrape(base: str, timeout: float = 15.0, headers: dict | None = None) -> Scrape:
    status, body = http_get(base + "/metrics", timeout=timeout, headers=headers)
    assert status == 200, body
    return parse(body)


def assert_no_nan(text: str) -> None:
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        value = line.rsplit(" ", 1)[1]
        assert value.lower() not in ("nan", "+inf", "-inf", "inf"), line
        assert not math.isnan(float(value)), line


def log_lines(output: str, pattern: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(pattern, line)]
