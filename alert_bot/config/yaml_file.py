"""The optional YAML file (ALERT_BOT_CONFIG): its top-level keys and every section's
settings, read into Config's fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from alert_bot.config.settings import (
    ChartSettings,
    DeliverySettings,
    EnergySettings,
    HealthSettings,
    RateLimits,
    Route,
    RunSettings,
    Tariff,
    WatchdogSettings,
)
from alert_bot.config.values import (
    ConfigError,
    _bool,
    _check_keys,
    _count,
    _id_list,
    _int,
    _labels,
    _name,
    _number,
    _read_text,
    _section,
    _time_of_day,
    _user_chats,
    duration_at_least,
    parse_duration,
)

# The run watch reads Prometheus every interval; a webhook read shorter than a second times
# out honest Alertmanagers on a busy host.
RUNS_INTERVAL_FLOOR = 1.0
READ_TIMEOUT_FLOOR = 1.0


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


TOP_LEVEL_KEYS = {
    "routes",
    "default_message_thread_id",
    "access",
    "template",
    "template_file",
    "grafana",
    "charts",
    "watchdog",
    "delivery",
    "rate_limits",
    "webhook",
    "telegram",
    "runs",
    "energy",
    "digest",
    "health",
    "timezone",
    "language",
}


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
    out["charts"] = _section(
        "charts",
        data.get("charts"),
        ChartSettings,
        {
            "enabled": _bool,
            "range": ("range_seconds", parse_duration),
            "max_per_message": _count(0),
            "timeout": parse_duration,
        },
    )
    out["watchdog"] = _section(
        "watchdog",
        data.get("watchdog"),
        WatchdogSettings,
        {
            "enabled": _bool,
            "alertname": _name,
            "timeout": parse_duration,
            "check_interval": parse_duration,
        },
    )
    out["delivery"] = _section(
        "delivery",
        data.get("delivery"),
        DeliverySettings,
        {
            "backoff_initial": parse_duration,
            "backoff_max": parse_duration,
            "max_message_chars": lambda k, v: min(_int(k, v, 200), 4096),
            "compact_after_alerts": _count(1),
            "max_parts_per_alert": _count(1),
            "batch_rows": _count(1),
            "parallel_chats": _count(1),
        },
    )
    out["rate_limits"] = _section(
        "rate_limits",
        data.get("rate_limits"),
        RateLimits,
        {
            "per_chat_messages": _count(1),
            "per_chat_window": parse_duration,
            "group_messages": _count(1),
            "group_window": parse_duration,
            "global_messages": _count(1),
            "global_window": parse_duration,
        },
    )
    webhook = _check_keys(
        "webhook",
        data.get("webhook"),
        {"max_body_bytes", "dedupe_window", "read_timeout", "max_connections"},
    )
    if "max_connections" in webhook:
        out["max_connections"] = _int("webhook.max_connections", webhook["max_connections"], 8)
    if "read_timeout" in webhook:
        out["read_timeout"] = parse_duration(
            "webhook.read_timeout", webhook["read_timeout"], READ_TIMEOUT_FLOOR
        )
    if "max_body_bytes" in webhook:
        out["max_body_bytes"] = _int("webhook.max_body_bytes", webhook["max_body_bytes"], 1024)
    if "dedupe_window" in webhook:
        out["dedupe_window"] = parse_duration("webhook.dedupe_window", webhook["dedupe_window"])
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
    telegram = _check_keys("telegram", data.get("telegram"), {"long_poll_timeout"})
    if "long_poll_timeout" in telegram:
        out["long_poll_timeout"] = max(
            1, int(parse_duration("telegram.long_poll_timeout", telegram["long_poll_timeout"]))
        )
    out.update(_runs_energy_time(data))
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


def _tariffs(key: str, value: Any) -> tuple[Tariff, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, "expected a list of {from: HH:MM, price_per_kwh: N}")
    tariffs = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        item = _check_keys(where, item, {"from", "price_per_kwh"})
        for name in ("from", "price_per_kwh"):
            if name not in item:
                raise ConfigError(f"{where}.{name}", "required")
        tariffs.append(
            Tariff(
                _time_of_day(f"{where}.from", item["from"]),
                _number(f"{where}.price_per_kwh", item["price_per_kwh"], 0),
            )
        )
    starts = [t.start_minute for t in tariffs]
    if starts != sorted(set(starts)):
        raise ConfigError(key, "tariffs must be listed by their start time, each once")
    return tuple(tariffs)


def _runs_energy_time(data: dict) -> dict[str, Any]:
    """runs.*, energy.*, digest.at and timezone: the training-run watch and energy cost."""
    out: dict[str, Any] = {
        "runs": _section(
            "runs",
            data.get("runs"),
            RunSettings,
            {
                "enabled": _bool,
                "interval": duration_at_least(RUNS_INTERVAL_FLOOR),
                "min_duration": lambda k, v: 0.0 if v in (0, "0") else parse_duration(k, v),
                "notify_start": _bool,
                "user_chats": _user_chats,
                "user_chats_only": _bool,
            },
        ),
        "energy": _section(
            "energy",
            data.get("energy"),
            EnergySettings,
            {
                "price_per_kwh": lambda k, v: _number(k, v, 0),
                "currency": _name,
                "wall_factor": lambda k, v: _number(k, v, 0.5, 3),
                "host_watts": lambda k, v: _number(k, v, 0, 10000),
                "tariffs": _tariffs,
            },
        ),
    }
    energy = out["energy"]
    if energy.tariffs and energy.price_per_kwh is not None:
        raise ConfigError("energy.tariffs", "set either energy.price_per_kwh or energy.tariffs")
    digest = _check_keys("digest", data.get("digest"), {"at"})
    if digest.get("at") is not None:
        out["digest_minute"] = _time_of_day("digest.at", digest["at"])
    out["health"] = _section(
        "health",
        data.get("health"),
        HealthSettings,
        {
            "enabled": _bool,
            "day": ("weekday", _weekday),
            "at": ("minute", _time_of_day),
            "all_well": _bool,
        },
    )
    return out


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(key: str, value: Any) -> int:
    """Monday = 0 ... Sunday = 6, from the day's English name or its first three letters."""
    name = str(value).strip().lower()
    for number, day in enumerate(WEEKDAYS):
        if name in (day, day[:3]) and not isinstance(value, bool):
            return number
    raise ConfigError(key, f"expected a day of the week like monday, got {value!r}")


def language_setting(value: Any) -> str:
    from alert_bot.i18n import LANGUAGES

    name = str(value).strip().lower()
    if isinstance(value, bool) or name not in LANGUAGES:
        raise ConfigError("language", f"expected one of {', '.join(LANGUAGES)}, got {value!r}")
    return name
