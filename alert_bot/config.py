"""The alert bot's configuration: environment variables plus an optional YAML file.

Every problem is reported as a ConfigError naming the offending key, so the command line can
print one clear line and exit 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from rigwatch.words import parse_bool

DEFAULT_LISTEN = "0.0.0.0:10736"
DEFAULT_DB = "rigwatch-bot.db"
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
# Anyone who can reach the webhook and guess the token can post fake alerts (or fake "resolved"
# notices that hide real ones); 16 characters is the least that cannot be guessed online.
WEBHOOK_TOKEN_MIN_CHARS = 16
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message starts with the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class Route:
    """Alerts whose labels match go to chat_id (and the forum topic, when given)."""

    chat_id: int
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, re.Pattern] = field(default_factory=dict)
    message_thread_id: int | None = None
    continue_matching: bool = False

    def matches(self, labels: dict[str, str]) -> bool:
        for name, value in self.match.items():
            if labels.get(name, "") != value:
                return False
        return all(
            pattern.fullmatch(labels.get(name, "")) for name, pattern in self.match_re.items()
        )


@dataclass(frozen=True)
class RateLimits:
    """Self-imposed flood limits, kept under Telegram's so it never has to answer 429."""

    per_chat_messages: int = 3
    per_chat_window: float = 3.0
    group_messages: int = 20
    group_window: float = 60.0
    global_messages: int = 30
    global_window: float = 1.0


@dataclass(frozen=True)
class DeliverySettings:
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_message_chars: int = 4096
    compact_after_alerts: int = 40
    max_parts_per_alert: int = 4
    batch_rows: int = 500
    parallel_chats: int = 8


@dataclass(frozen=True)
class ChartSettings:
    enabled: bool = True
    range_seconds: float = 3600.0
    max_per_message: int = 2
    timeout: float = 10.0


@dataclass(frozen=True)
class WatchdogSettings:
    enabled: bool = True
    alertname: str = "Watchdog"
    timeout: float = 600.0
    check_interval: float = 15.0


@dataclass(frozen=True)
class RunSettings:
    """The training-run watch: how often it looks, and which runs it reports."""

    enabled: bool = True
    interval: float = 30.0
    min_duration: float = 600.0
    notify_start: bool = False


@dataclass(frozen=True)
class Tariff:
    """A price from a local time of day (minutes after midnight) until the next tariff's."""

    start_minute: int
    price_per_kwh: float


@dataclass(frozen=True)
class EnergySettings:
    """What a kWh costs and how the cards' own figures relate to what the socket sees."""

    price_per_kwh: float | None = None
    currency: str = "€"
    wall_factor: float = 1.0
    host_watts: float = 0.0
    tariffs: tuple[Tariff, ...] = ()

    @property
    def priced(self) -> bool:
        return self.price_per_kwh is not None or bool(self.tariffs)

    def price_at(self, minute_of_day: int) -> float:
        """The price per kWh at a local minute of the day (the flat price without tariffs)."""
        if not self.tariffs:
            return self.price_per_kwh or 0.0
        current = self.tariffs[-1]  # the last tariff of the day runs past midnight
        for tariff in self.tariffs:
            if tariff.start_minute <= minute_of_day:
                current = tariff
        return current.price_per_kwh


@dataclass(frozen=True)
class Config:
    telegram_token: str
    default_chat_id: int
    webhook_token: str
    telegram_api_url: str | None = None
    listen_host: str = "0.0.0.0"
    listen_port: int = 10736
    db_path: str = DEFAULT_DB
    prometheus_url: str = "http://localhost:9090"
    alertmanager_url: str = "http://localhost:9093"
    grafana_url: str = "http://localhost:3000"
    grafana_dashboard_uid: str = "rigwatch-gpu"
    routes: tuple[Route, ...] = ()
    default_thread_id: int | None = None
    allowed_chat_ids: frozenset[int] = frozenset()
    allowed_user_ids: frozenset[int] = frozenset()
    template_source: str | None = None
    max_body_bytes: int = 1024 * 1024
    dedupe_window: float = 300.0
    read_timeout: float = 30.0
    max_connections: int = 256
    long_poll_timeout: int = 25
    rate_limits: RateLimits = field(default_factory=RateLimits)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    charts: ChartSettings = field(default_factory=ChartSettings)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    runs: RunSettings = field(default_factory=RunSettings)
    energy: EnergySettings = field(default_factory=EnergySettings)
    digest_minute: int | None = None  # local minute of the day for the daily digest; None = off
    timezone: str = ""  # the owner's IANA time zone for every time a person reads; "": machine's
    language: str = "en"  # what the bot speaks in chats: en or ru (alert_bot.i18n.LANGUAGES)

    @property
    def zone(self) -> tzinfo:
        return time_zone(self.timezone)

    def chat_allowed(self, chat_id: int) -> bool:
        return chat_id == self.default_chat_id or chat_id in self.allowed_chat_ids

    def may_use(self, chat_id: int, user_id: int | None) -> bool:
        """Whether a user in a chat may read data and press buttons.

        A chat on the list is enough unless a user list is configured, in which case the user
        must be on it too; a listed user may also talk to the bot in a private chat.
        """
        if self.allowed_user_ids:
            if user_id not in self.allowed_user_ids:
                return False
            return self.chat_allowed(chat_id) or chat_id == user_id
        return self.chat_allowed(chat_id)


def parse_duration(key: str, value: Any) -> float:
    """Seconds from 30, 1.5, "500ms", "30s", "10m", "1h" or "7d"."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration like 30s or 10m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ConfigError(key, f"expected a duration like 30s or 10m, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(key, f"must be positive, got {value!r}")
    return seconds


def _int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {number}")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        if isinstance(value, str | int):
            return parse_bool(str(value))
    except ValueError:
        pass
    raise ConfigError(key, f"expected true/false, 1/0, yes/no or on/off, got {value!r}")


KNOWN_ENVIRONMENT = {
    "ALERT_BOT_WEBHOOK_TOKEN",
    "ALERT_BOT_WEBHOOK_TOKEN_FILE",
    "ALERT_BOT_LISTEN",
    "ALERT_BOT_DB",
    "ALERT_BOT_CONFIG",
    "ALERT_BOT_LOG_LEVEL",
}


def unknown_environment(env: dict[str, str] | None = None) -> list[str]:
    """One sentence per ALERT_BOT_* variable that is no setting (a typo is otherwise silently
    ignored), with the nearest one that is."""
    import difflib

    notes = []
    for name in sorted(os.environ if env is None else env):
        if name.startswith("ALERT_BOT_") and name not in KNOWN_ENVIRONMENT:
            close = difflib.get_close_matches(name, sorted(KNOWN_ENVIRONMENT), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            notes.append(f"{name} is not a rigwatch-bot setting and is ignored{hint}")
    return notes


def _read_text(key: str, path: str | Path) -> str:
    """A file's text, or a ConfigError naming the key (unreadable, or not UTF-8 text)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None


def _count(minimum: int) -> Callable[[str, Any], int]:
    """A parser for an integer setting of at least minimum."""
    return lambda key, value: _int(key, value, minimum)


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected a non-empty name, got {value!r}")
    return value.strip()


def _secret(env: dict[str, str], name: str) -> str | None:
    """A secret from NAME or from the file named by NAME_FILE (one of them, not both)."""
    direct = env.get(name, "").strip()
    file_name = env.get(name + "_FILE", "").strip()
    if direct and file_name:
        raise ConfigError(name, f"set either {name} or {name}_FILE, not both")
    if file_name:
        value = _read_text(name + "_FILE", file_name).strip()
        if not value:
            raise ConfigError(name + "_FILE", f"{file_name} is empty")
        return value
    return direct or None


def _url(key: str, value: str) -> str:
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(key, f"expected an http:// or https:// URL, got {value!r}")
    return value


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        raise ConfigError("ALERT_BOT_LISTEN", f"expected host:port, got {value!r}")
    port_number = _int("ALERT_BOT_LISTEN", port)
    if not 0 <= port_number <= 65535:
        raise ConfigError("ALERT_BOT_LISTEN", f"port out of range in {value!r}")
    return host.strip("[]") or "0.0.0.0", port_number


def _check_keys(key: str, section: Any, allowed: set[str]) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(key, "expected a mapping")
    for name in section:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(where, f"unknown setting (known: {', '.join(sorted(allowed))})")
    return section


def _labels(key: str, value: Any) -> dict[str, str]:
    section = _check_keys(key, value, set(value or {}))
    result = {}
    for name, text in section.items():
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            raise ConfigError(f"{key}.{name}", "expected a string")
        result[str(name)] = str(text)
    return result


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


def _id_list(key: str, value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of numeric ids")
    return frozenset(_int(f"{key}[{i}]", item) for i, item in enumerate(value))


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
    "timezone",
    "language",
}


def time_zone(name: str) -> tzinfo:
    """The IANA zone by name; for an empty name the machine's (TZ, then /etc/localtime)."""
    if name:
        return ZoneInfo(name)
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for candidate in candidates:
        try:
            if candidate:
                return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


def _api_url(value: str) -> str | None:
    """TELEGRAM_API_URL: a Bot API server's base URL (https://api.telegram.org, or a local
    server's http://host:port); pyTelegramBotAPI's own shape, ending in /bot{0}/{1}, is taken
    too. A URL that already ends in /bot would have /bot<token>/<method> appended to it."""
    value = value.strip()
    if not value:
        return None
    url = _url("TELEGRAM_API_URL", value)
    if "{" in url or "}" in url:
        if not url.endswith("/bot{0}/{1}") or url.count("{") != 2:
            raise ConfigError(
                "TELEGRAM_API_URL",
                f"expected the server's base URL like https://api.telegram.org, got {value!r}",
            )
        return url
    if re.search(r"://[^/]+/(.*/)?bot[^/]*$", url):
        raise ConfigError(
            "TELEGRAM_API_URL",
            f"give the server's base URL without /bot (like https://api.telegram.org), "
            f"got {value!r}",
        )
    if "?" in url or "#" in url:
        raise ConfigError("TELEGRAM_API_URL", f"expected a base URL without ? or #, got {value!r}")
    return url


def _bot_token(env: dict[str, str]) -> str:
    token = _secret(env, "TELEGRAM_BOT_TOKEN")
    if not token:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", "required (or TELEGRAM_BOT_TOKEN_FILE): ask @BotFather"
        )
    if not _TOKEN_SHAPE.match(token):
        raise ConfigError("TELEGRAM_BOT_TOKEN", "does not look like a bot token (digits:letters)")
    return token


def first_run(env: dict[str, str] | None = None) -> bool:
    """True when no default chat is set yet (TELEGRAM_CHAT_ID empty or 0): the bot then only
    answers /start with the chat's id, which is how a new owner finds it."""
    env = os.environ if env is None else env
    return env.get("TELEGRAM_CHAT_ID", "").strip() in ("", "0")


@dataclass(frozen=True)
class FirstRunConfig:
    telegram_token: str
    telegram_api_url: str | None = None
    language: str = "en"


def load_first_run_config(env: dict[str, str] | None = None) -> FirstRunConfig:
    """What the first-run mode needs: the bot token, the Bot API server and, when a YAML file
    is already given, the language it answers in; nothing else."""
    env = dict(os.environ if env is None else env)
    language = "en"
    config_path = env.get("ALERT_BOT_CONFIG", "").strip()
    if config_path:
        data = load_yaml(config_path)
        if data.get("language") is not None:
            language = _language(data["language"])
    return FirstRunConfig(_bot_token(env), _api_url(env.get("TELEGRAM_API_URL", "")), language)


def load_config(env: dict[str, str] | None = None) -> Config:
    """Build the configuration from the environment (os.environ by default) and the YAML file."""
    env = dict(os.environ if env is None else env)
    token = _bot_token(env)
    if first_run(env):
        raise ConfigError(
            "TELEGRAM_CHAT_ID",
            "required: the default chat (start the bot without it and send /start to it)",
        )
    chat_id = _int("TELEGRAM_CHAT_ID", env["TELEGRAM_CHAT_ID"])
    webhook_token = _secret(env, "ALERT_BOT_WEBHOOK_TOKEN")
    if not webhook_token:
        raise ConfigError(
            "ALERT_BOT_WEBHOOK_TOKEN",
            "required (or ALERT_BOT_WEBHOOK_TOKEN_FILE): the bearer token Alertmanager sends",
        )
    if len(webhook_token) < WEBHOOK_TOKEN_MIN_CHARS:
        raise ConfigError(
            "ALERT_BOT_WEBHOOK_TOKEN",
            f"at least {WEBHOOK_TOKEN_MIN_CHARS} characters (anyone who guesses it can post "
            "alerts): make one with openssl rand -hex 32",
        )
    api_url = _api_url(env.get("TELEGRAM_API_URL", ""))
    host, port = _listen(env.get("ALERT_BOT_LISTEN", "") or DEFAULT_LISTEN)
    settings: dict[str, Any] = {
        "telegram_token": token,
        "default_chat_id": chat_id,
        "webhook_token": webhook_token,
        "telegram_api_url": api_url,
        "listen_host": host,
        "listen_port": port,
        "db_path": env.get("ALERT_BOT_DB", "").strip() or DEFAULT_DB,
    }
    for name, attr in (
        ("PROMETHEUS_URL", "prometheus_url"),
        ("ALERTMANAGER_URL", "alertmanager_url"),
        ("GRAFANA_URL", "grafana_url"),
    ):
        if env.get(name, "").strip():
            settings[attr] = _url(name, env[name])
    config_path = env.get("ALERT_BOT_CONFIG", "").strip()
    if config_path:
        settings.update(_from_yaml(load_yaml(config_path), Path(config_path).parent))
    return Config(**settings)


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
        out["read_timeout"] = parse_duration("webhook.read_timeout", webhook["read_timeout"])
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
        out["language"] = _language(data["language"])
    telegram = _check_keys("telegram", data.get("telegram"), {"long_poll_timeout"})
    if "long_poll_timeout" in telegram:
        out["long_poll_timeout"] = max(
            1, int(parse_duration("telegram.long_poll_timeout", telegram["long_poll_timeout"]))
        )
    out.update(_runs_energy_time(data))
    return out


def _language(value: Any) -> str:
    from alert_bot.i18n import LANGUAGES

    name = str(value).strip().lower()
    if isinstance(value, bool) or name not in LANGUAGES:
        raise ConfigError("language", f"expected one of {', '.join(LANGUAGES)}, got {value!r}")
    return name


def _number(key: str, value: Any, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, f"expected a number, got {value!r}") from None
    if not minimum <= number <= (maximum if maximum is not None else float("inf")):
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(key, f"must be at least {minimum:g}{upper}, got {value!r}")
    return number


def _time_of_day(key: str, value: Any) -> int:
    """Minutes after midnight from "HH:MM"."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(value).strip())
    if isinstance(value, bool) or not match:
        raise ConfigError(key, f"expected a local time like 07:30, got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


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
                "interval": parse_duration,
                "min_duration": lambda k, v: 0.0 if v in (0, "0") else parse_duration(k, v),
                "notify_start": _bool,
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
    return out


def _section(key: str, value: Any, cls: type, parsers: dict[str, Any]) -> Any:
    section = _check_keys(key, value, set(parsers))
    kwargs = {}
    for name, raw in section.items():
        parser = parsers[name]
        attr = name
        if isinstance(parser, tuple):
            attr, parser = parser
        kwargs[attr] = parser(f"{key}.{name}", raw)
    return cls(**kwargs)
