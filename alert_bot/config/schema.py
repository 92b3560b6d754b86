"""The YAML file's settings as settings.py declares them (each a field made by `setting()`):
which sections and keys the file knows, each section parsed by its fields' parsers, and the
settings table of docs/alert-bot.md, generated from the same fields.

    python -m alert_bot.config.schema    # prints the table (tests/alert_bot/test_config_schema.py
                                         # holds the docs to it)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from alert_bot.config.settings import Config
from alert_bot.config.values import _check_keys, parse_duration

# The file's keys parsed by hand in yaml_file.py (lists, mutually exclusive pairs, a single
# value at the top level); every other key is a field declared with setting().
OTHER_KEYS = frozenset(
    {
        "routes",
        "default_message_thread_id",
        "access",
        "template",
        "template_file",
        "grafana",
        "digest",
        "timezone",
        "language",
    }
)


def _is_setting(field: dataclasses.Field) -> bool:
    return "parse" in field.metadata


def file_key(field: dataclasses.Field) -> str:
    """The field's name in the file (within its section)."""
    return field.metadata.get("key") or field.name


def section_classes() -> dict[str, type]:
    """The file's sections that are a dataclass of their own: name → class (charts →
    ChartSettings), in Config's order."""
    out = {}
    for field in dataclasses.fields(Config):
        factory = field.default_factory
        if (
            isinstance(factory, type)
            and dataclasses.is_dataclass(factory)
            and any(_is_setting(f) for f in dataclasses.fields(factory))
        ):
            out[field.name] = factory
    return out


def flat_sections() -> dict[str, list[dataclasses.Field]]:
    """The file's sections whose settings are Config's own fields (webhook, telegram)."""
    out: dict[str, list[dataclasses.Field]] = {}
    for field in dataclasses.fields(Config):
        if _is_setting(field) and field.metadata.get("section"):
            out.setdefault(field.metadata["section"], []).append(field)
    return out


TOP_LEVEL_KEYS = frozenset(OTHER_KEYS | set(section_classes()) | set(flat_sections()))


def parse_section(key: str, value: Any, cls: type) -> Any:
    """The section of the file named key, read into cls: an unknown key is refused with the
    nearest known one; each value goes through its field's parser, which names the key."""
    fields = {file_key(f): f for f in dataclasses.fields(cls) if _is_setting(f)}
    section = _check_keys(key, value, set(fields))
    kwargs = {}
    for name, raw in section.items():
        field = fields[name]
        kwargs[field.name] = field.metadata["parse"](f"{key}.{name}", raw)
    return cls(**kwargs)


def parse_flat_section(key: str, value: Any) -> dict[str, Any]:
    """A section whose settings are Config's own fields: their values by field name."""
    fields = {file_key(f): f for f in flat_sections().get(key, [])}
    section = _check_keys(key, value, set(fields))
    return {
        fields[name].name: fields[name].metadata["parse"](f"{key}.{name}", raw)
        for name, raw in section.items()
    }


def _default(field: dataclasses.Field) -> str:
    if field.metadata.get("shown"):
        return f"`{field.metadata['shown']}`"
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value in ((), {}):
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_duration(field.metadata["parse"]):
        return f"`{_duration_words(float(value))}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _is_duration(parse: Any) -> bool:
    """A parser of durations: parse_duration itself, or one that calls it (a floor, 0 allowed)."""
    code = getattr(parse, "__code__", None)
    return parse is parse_duration or (code is not None and "parse_duration" in code.co_names)


def _duration_words(seconds: float) -> str:
    """A default duration as the file would write it: 1h, 10m, 30s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def settings_table() -> str:
    """The markdown table of every setting declared with setting(): key, default, what."""
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    groups = [
        (name, [f for f in dataclasses.fields(cls) if _is_setting(f)])
        for name, cls in section_classes().items()
    ] + list(flat_sections().items())
    for section, fields in sorted(groups):
        for field in fields:
            rows.append(
                f"| `{section}.{file_key(field)}` | {_default(field)} | {field.metadata['doc']} |"
            )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
