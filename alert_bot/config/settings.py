"""The settings the bot runs with: Config and its sections, each with its defaults, and
the owner's time zone."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_LISTEN = "0.0.0.0:10736"
DEFAULT_DB = "rigwatch-bot.db"


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
    # Unix user -> the Telegram chat of that person: their runs' messages go there too.
    user_chats: dict[str, int] = field(default_factory=dict)
    # True: a mapped user's run messages go to that user alone, not to the rig's chat.
    user_chats_only: bool = False

    def users_of(self, chat_id: int) -> frozenset[str]:
        """The Unix users whose own chat chat_id is (empty for any other chat)."""
        return frozenset(user for user, chat in self.user_chats.items() if chat == chat_id)


@dataclass(frozen=True)
class HealthSettings:
    """The weekly card-health report: on which local weekday and minute, and whether a rig
    with nothing drifting gets a line saying so."""

    enabled: bool = True
    weekday: int = 0  # Monday = 0 ... Sunday = 6
    minute: int = 9 * 60  # local minutes after midnight
    all_well: bool = False


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
    health: HealthSettings = field(default_factory=HealthSettings)
    digest_minute: int | None = None  # local minute of the day for the daily digest; None = off
    timezone: str = ""  # the owner's IANA time zone for every time a person reads; "": machine's
    language: str = "en"  # what the bot speaks in chats: en or ru (alert_bot.i18n.LANGUAGES)

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
