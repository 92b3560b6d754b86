"""The settings the bot runs with: Config and its sections, each with its defaults, and
the owner's time zone.

A setting of the YAML file is declared once, as its field here: `setting(default, parser,
doc)` puts the parser and the words for the docs into the field's metadata, so the file's
parsing, its known keys (and the did-you-mean for an unknown one), the error texts (each
parser's, naming the key) and the settings table in docs/alert-bot.md (schema.py) all follow
from that one line."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alert_bot.config.values import (
    ConfigError,
    _bool,
    _check_keys,
    _count,
    _int,
    _name,
    _number,
    _time_of_day,
    _user_chats,
    _weekday,
    duration_at_least,
    parse_duration,
)

DEFAULT_LISTEN = "0.0.0.0:10736"
DEFAULT_DB = "rigwatch-bot.db"
LANGUAGES = ("en", "ru")  # the catalogs under alert_bot/locale (en is the source)
# The run watch reads Prometheus every interval; a webhook read shorter than a second times
# out honest Alertmanagers on a busy host.
RUNS_INTERVAL_FLOOR = 1.0
READ_TIMEOUT_FLOOR = 1.0


def setting(
    default: Any,
    parse: Callable[[str, Any], Any],
    doc: str,
    key: str = "",
    section: str = "",
    factory: Callable[[], Any] | None = None,
    shown: str = "",
) -> Any:
    """A dataclass field that is a setting of the YAML file: its default, the parser of the
    file's value (called with the dotted key, raising ConfigError), what it does in words, and
    its name in the file when that differs from the field's (key); section for a field of
    Config itself that the file sets under a section (webhook.read_timeout); shown: the default
    as the file writes it, where that is not the stored value (a weekday name for 0)."""
    metadata = {"parse": parse, "doc": doc, "key": key, "section": section, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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

    per_chat_messages: int = setting(3, _count(1), "messages per chat within per_chat_window")
    per_chat_window: float = setting(3.0, parse_duration, "the window of per_chat_messages")
    group_messages: int = setting(20, _count(1), "messages per group within group_window")
    group_window: float = setting(60.0, parse_duration, "the window of group_messages")
    global_messages: int = setting(30, _count(1), "messages in all within global_window")
    global_window: float = setting(1.0, parse_duration, "the window of global_messages")


@dataclass(frozen=True)
class DeliverySettings:
    backoff_initial: float = setting(
        1.0, parse_duration, "first retry after a network error or 5xx"
    )
    backoff_max: float = setting(60.0, parse_duration, "the longest wait between retries")
    max_message_chars: int = setting(
        4096, lambda k, v: min(_int(k, v, 200), 4096), "longest message (200 to 4096)"
    )
    compact_after_alerts: int = setting(
        40, _count(1), "more alerts waiting than this: one line per alert"
    )
    max_parts_per_alert: int = setting(4, _count(1), 'a longer alert is cut with "…(truncated)"')
    batch_rows: int = setting(500, _count(1), "outbox rows read at once")
    parallel_chats: int = setting(
        8, _count(1), "chats sent to at once (one message in flight per chat)"
    )


@dataclass(frozen=True)
class ChartSettings:
    enabled: bool = setting(True, _bool, "a chart with each firing critical alert")
    range_seconds: float = setting(3600.0, parse_duration, "the time charted", key="range")
    max_per_message: int = setting(2, _count(0), "charts sent with one message at most")
    timeout: float = setting(10.0, parse_duration, "how long a chart's queries may take")


@dataclass(frozen=True)
class WatchdogSettings:
    enabled: bool = setting(True, _bool, "the dead man's switch")
    alertname: str = setting("Watchdog", _name, "the heartbeat alert's name")
    timeout: float = setting(600.0, parse_duration, "say so when no heartbeat came this long")
    check_interval: float = setting(15.0, parse_duration, "how often it looks")


@dataclass(frozen=True)
class RunSettings:
    """The training-run watch: how often it looks, and which runs it reports."""

    enabled: bool = setting(True, _bool, "the training-run watch")
    interval: float = setting(
        30.0, duration_at_least(RUNS_INTERVAL_FLOOR), "how often it looks at Prometheus"
    )
    min_duration: float = setting(
        600.0,
        lambda k, v: 0.0 if v in (0, "0") else parse_duration(k, v),
        "shorter runs are not reported (0 reports every run)",
    )
    notify_start: bool = setting(False, _bool, "also say when a run starts")
    # Unix user -> the Telegram chat of that person: their runs' messages go there too.
    user_chats: dict[str, int] = setting(
        None, _user_chats, "Unix user (or RIGWATCH_USER) to that person's chat id", factory=dict
    )
    # True: a mapped user's run messages go to that user alone, not to the rig's chat.
    user_chats_only: bool = setting(False, _bool, "a mapped user's runs go to that chat alone")

    def users_of(self, chat_id: int) -> frozenset[str]:
        """The Unix users whose own chat chat_id is (empty for any other chat)."""
        return frozenset(user for user, chat in self.user_chats.items() if chat == chat_id)


@dataclass(frozen=True)
class HealthSettings:
    """The weekly card-health report: on which local weekday and minute, and whether a rig
    with nothing drifting gets a line saying so."""

    enabled: bool = setting(True, _bool, "the weekly card-health report")
    weekday: int = setting(
        0, _weekday, "the local weekday it is sent (monday ... sunday)", key="day", shown="monday"
    )  # Monday = 0 ... Sunday = 6
    minute: int = setting(
        9 * 60, _time_of_day, "the local time it is sent (HH:MM, quoted)", key="at", shown="09:00"
    )  # local minutes after midnight
    all_well: bool = setting(False, _bool, "a rig with nothing drifting gets a line saying so")


@dataclass(frozen=True)
class Tariff:
    """A price from a local time of day (minutes after midnight) until the next tariff's."""

    start_minute: int
    price_per_kwh: float


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


@dataclass(frozen=True)
class EnergySettings:
    """What a kWh costs and how the cards' own figures relate to what the socket sees."""

    price_per_kwh: float | None = setting(
        None, lambda k, v: _number(k, v, 0), "unset: kWh only, no cost"
    )
    currency: str = setting("€", _name, "one character goes before the amount, longer after")
    wall_factor: float = setting(
        1.0, lambda k, v: _number(k, v, 0.5, 3), "the socket's energy against the cards' own"
    )
    host_watts: float = setting(
        0.0, lambda k, v: _number(k, v, 0, 10000), "a fixed host share, added to rig totals"
    )
    tariffs: tuple[Tariff, ...] = setting(
        (), _tariffs, "instead of price_per_kwh: prices from a local time"
    )

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
    max_body_bytes: int = setting(
        1024 * 1024,
        lambda k, v: _int(k, v, 1024),
        "larger requests get 413",
        section="webhook",
    )
    dedupe_window: float = setting(
        300.0,
        parse_duration,
        "HA duplicates within this window are stored once",
        section="webhook",
    )
    read_timeout: float = setting(
        30.0,
        duration_at_least(READ_TIMEOUT_FLOOR),
        "a whole request must arrive within this; also the idle keep-alive",
        section="webhook",
    )
    max_connections: int = setting(
        256,
        lambda k, v: _int(k, v, 8),
        "past this, the longest-idle connection is closed",
        section="webhook",
    )
    long_poll_timeout: int = setting(
        25,
        lambda k, v: max(1, int(parse_duration(k, v))),
        "how long one getUpdates call waits",
        section="telegram",
    )
    rate_limits: RateLimits = field(default_factory=RateLimits)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    charts: ChartSettings = field(default_factory=ChartSettings)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    runs: RunSettings = field(default_factory=RunSettings)
    energy: EnergySettings = field(default_factory=EnergySettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    digest_minute: int | None = None  # local minute of the day for the daily digest; None = off
    timezone: str = ""  # the owner's IANA time zone for every time a person reads; "": machine's
    language: str = "en"  # what the bot speaks in chats: one of LANGUAGES

    @property
    def zone(self) -> tzinfo:
        return time_zone(self.timezone)

    def chat_allowed(self, chat_id: int) -> bool:
        return chat_id == self.default_chat_id or chat_id in self.allowed_chat_ids

    def targets(self, labels: dict[str, str], user: str = "") -> list[tuple[int, int | None]]:
        """The (chat, topic) pairs a message with these labels goes to: the first matching
        route (and those after it while `continue` says so), else the default chat; plus the
        own chat of user when runs.user_chats names one (alone with runs.user_chats_only)."""
        user_chat = self.runs.user_chats.get(user) if user else None
        found: list[tuple[int, int | None]] = []
        if user_chat is None or not self.runs.user_chats_only:
            for route in self.routes:
                if route.matches(labels):
                    found.append((route.chat_id, route.message_thread_id))
                    if not route.continue_matching:
                        break
            if not found:
                found.append((self.default_chat_id, self.default_thread_id))
        if user_chat is not None:
            found.append((user_chat, None))
        return list(dict.fromkeys(found))

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


@dataclass(frozen=True)
class FirstRunConfig:
    telegram_token: str
    telegram_api_url: str | None = None
    language: str = "en"


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
