"""The optional YAML file (ALERT_BOT_CONFIG): its top-level keys and every section's
settings, read into Config's fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from alert_bot.config.schema import (
    TOP_LEVEL_KEYS,
    flat_sections,
    parse_flat_section,
    parse_section,
    section_classes,
)
from alert_bot.config.settings import LANGUAGES, Route
from alert_bot.config.values import (
    ConfigError,
    _bool,
    _check_keys,
    _id_list,
    _int,
    _labels,
    _read_text,
    _time_of_day,
)


def load_yaml(path: str) -> dict:
    text = _read_text("ALERT_BOT_CONFIG", path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # What is wrong there, as the parser says it ("did not find expected ',' or '}'",
        # "found character '\t' that cannot start any token"), with what it was reading.
        problem = getattr(exc, "problem", None) or ""
        context = getattr(exc, "context", None)
        if problem and context:
            problem = f"{problem} ({context})"
        detail = f": {problem}" if problem else ""
        raise ConfigError("ALERT_BOT_CONFIG", f"{path} is not valid YAML{where}{detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("ALERT_BOT_CONFIG", f"{path} must hold a mapping at the top level")
    return data


def _from_yaml(data: dict, base_dir: Path) -> dict[str, Any]:
    _check_keys("", data, TOP_LEVEL_KEYS)
    out: dict[str, Any] = {"routes": _routes(data.get("routes"))}
    if data.get("default_message_thread_id") is not None:
        out["default_thread_id"] = _int(
            "default_message_thread_id", data["default_message_thread_id"], 1
        )
    access = _check_keys("access", data.get("access"), {"allowed_chat_ids", "allowed_user_ids"})
    out["allowed_chat_ids"] = _id_list("access.allowed_chat_ids", access.get("allowed_chat_ids"))
    out["allowed_user_ids"] = _id_list("access.allowed_user_ids", access.get("allowed_user_ids"))
    if "template" in data and "template_file" in data:
        raise ConfigError("template_file", "set either template or template_file, not both")
    if data.get("template") is not None:
        if not isinstance(data["template"], str) or not data["template"].strip():
            raise ConfigError("template", "expected the Jinja2 template text")
        out["template_source"] = data["template"]
    if data.get("template_file") is not None:
        path = Path(str(data["template_file"]))
        if not path.is_absolute():
            path = base_dir / path
        out["template_source"] = _read_text("template_file", path)
    grafana = _check_keys("grafana", data.get("grafana"), {"dashboard_uid"})
    if grafana.get("dashboard_uid"):
        out["grafana_dashboard_uid"] = str(grafana["dashboard_uid"])
    for name, cls in section_classes().items():
        out[name] = parse_section(name, data.get(name), cls)
    for name in flat_sections():
        out.update(parse_flat_section(name, data.get(name)))
    if data.get("timezone") is not None:
        name = str(data["timezone"]).strip()
        try:
            if name:
                ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                "timezone", f"unknown time zone {name!r} (a name like Europe/Berlin)"
            ) from None
        out["timezone"] = name
    if data.get("language") is not None:
        out["language"] = language_setting(data["language"])
    if out["energy"].tariffs and out["energy"].price_per_kwh is not None:
        raise ConfigError("energy.tariffs", "set either energy.price_per_kwh or energy.tariffs")
    digest = _check_keys("digest", data.get("digest"), {"at"})
    if digest.get("at") is not None:
        out["digest_minute"] = _time_of_day("digest.at", digest["at"])
    return out


def _routes(value: Any) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("routes", "expected a list of routes")
    routes = []
    for index, item in enumerate(value):
        key = f"routes[{index}]"
        item = _check_keys(
            key, item, {"match", "match_re", "chat_id", "message_thread_id", "continue"}
        )
        if "chat_id" not in item:
            raise ConfigError(f"{key}.chat_id", "every route needs a chat_id")
        patterns = {}
        for name, text in _labels(f"{key}.match_re", item.get("match_re")).items():
            try:
                patterns[name] = re.compile(text)
            except re.error as exc:
                raise ConfigError(
                    f"{key}.match_re.{name}", f"bad regular expression: {exc}"
                ) from None
        thread = item.get("message_thread_id")
        routes.append(
            Route(
                chat_id=_int(f"{key}.chat_id", item["chat_id"]),
                match=_labels(f"{key}.match", item.get("match")),
                match_re=patterns,
                message_thread_id=None
                if thread is None
                else _int(f"{key}.message_thread_id", thread, 1),
                continue_matching=_bool(f"{key}.continue", item.get("continue", False)),
            )
        )
    return tuple(routes)


def language_setting(value: Any) -> str:
    name = str(value).strip().lower()
    if isinstance(value, bool) or name not in LANGUAGES:
        raise ConfigError("language", f"expected one of {', '.join(LANGUAGES)}, got {value!r}")
    return name
