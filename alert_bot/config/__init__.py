"""The alert bot's configuration: environment variables plus an optional YAML file.

Every problem is reported as a ConfigError naming the offending key, so the command line can
print one clear line and exit 2.

The package: values.py (ConfigError and the value parsers), settings.py (Config and its
sections, each file setting declared once with setting()), schema.py (the file's keys, its
sections parsed and the docs' settings table, all from those declarations), yaml_file.py
(the YAML file) and environment.py (the environment and load_config).
"""

from __future__ import annotations

from alert_bot.config.environment import (
    KNOWN_ENVIRONMENT,
    WEBHOOK_TOKEN_MIN_CHARS,
    first_run,
    load_config,
    load_first_run_config,
    unknown_environment,
)
from alert_bot.config.schema import TOP_LEVEL_KEYS
from alert_bot.config.settings import (
    DEFAULT_DB,
    DEFAULT_LISTEN,
    ChartSettings,
    Config,
    DeliverySettings,
    EnergySettings,
    FirstRunConfig,
    HealthSettings,
    RateLimits,
    Route,
    RunSettings,
    Tariff,
    WatchdogSettings,
    time_zone,
)
from alert_bot.config.values import ConfigError, parse_duration
from alert_bot.config.yaml_file import load_yaml

__all__ = [
    "ChartSettings",
    "Config",
    "ConfigError",
    "DEFAULT_DB",
    "DEFAULT_LISTEN",
    "DeliverySettings",
    "EnergySettings",
    "FirstRunConfig",
    "KNOWN_ENVIRONMENT",
    "RateLimits",
    "Route",
    "HealthSettings",
    "RunSettings",
    "TOP_LEVEL_KEYS",
    "Tariff",
    "WEBHOOK_TOKEN_MIN_CHARS",
    "WatchdogSettings",
    "first_run",
    "load_config",
    "load_first_run_config",
    "load_yaml",
    "parse_duration",
    "time_zone",
    "unknown_environment",
]
