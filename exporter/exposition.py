"""Prometheus text format 0.0.4 for the families a scrape built.

prometheus_client's generate_latest() re-validates every label name with regular expressions
on every sample; our label names are constants checked by the test suite, so this writer only
escapes label values and formats numbers, several times faster on a 1000-sample scrape. The
output is checked against prometheus_client's own parser and promtool in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_headers: dict[tuple[str, str, str], str] = {}


def _header(name: str, help_text: str, kind: str) -> str:
    key = (name, help_text, kind)
    text = _headers.get(key)
    if text is None:
        escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
        text = _headers[key] = f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"
    return text


def _value(value: float) -> str:
    if value.__class__ is int:
        return str(value)
    value = float(value)
    if value - value != 0:  # NaN or ±Inf; never produced by the collectors, still well-formed
        if value != value:
            return "NaN"
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _label_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return text


class LabelSet(dict):
    """A label dict built once and reused scrape after scrape (a card's labels, one process's
    labels), carrying its rendered `name="value",...` text so the writer need not look it up
    per sample. Never modify one after it is built."""

    __slots__ = ("text",)

    def __init__(self, *args: object, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)
        self.text = ",".join(f'{k}="{_label_value(v)}"' for k, v in self.items())


# Rendered "name{labels}" prefixes: the same series come back every scrape. Bounded, because
# process series (pid labels) come and go.
_SERIES_CACHE_LIMIT = 20_000
_series: dict[tuple, str] = {}


def _series_prefix(name: str, labels: dict[str, str]) -> str:
    # Keyed by values only: every family builds its label dicts with the same names in the same
    # order (the metrics-doc test checks the label names per family).
    key = (name, *labels.values())
    text = _series.get(key)
    if text is None:
        if len(_series) >= _SERIES_CACHE_LIMIT:
            _series.clear()
        inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
        text = _series[key] = f"{name}{{{inner}}} "
    return text


def render(families: Iterable[Metric]) -> bytes:
    lines: list[str] = []
    append = lines.append
    for family in families:
        name = family.name + "_total" if family.type == "counter" else family.name
        append(_header(name, family.documentation, family.type))
        for sample in family.samples:
            # Indexing the (name, labels, value, ...) tuple and formatting finite floats and
            # ints inline: this loop runs for every sample of every scrape.
            value = sample[2]
            kind = value.__class__
            if kind is float and value - value == 0:
                text = repr(value)
            elif kind is int:
                text = str(value)
            else:
                text = _value(value)
            labels = sample[1]
            if labels.__class__ is LabelSet:
                append(f"{sample[0]}{{{labels.text}}} {text}\n")
            elif labels:
                append(_series_prefix(sample[0], labels) + text + "\n")
            else:
                append(f"{sample[0]} {text}\n")
    return "".join(lines).encode()
