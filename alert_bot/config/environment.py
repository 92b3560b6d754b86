"""The environment variables: secrets (or the files holding them), the Bot API server, the
listen address and the servers' URLs; load_config() reads them and the YAML file they name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from alert_bot.config.settings import DEFAULT_DB, DEFAULT_LISTEN, Config, FirstRunConfig
from alert_bot.config.values import ConfigError, _int, _read_text, _url
from alert_bot.config.yaml_file import _from_yaml, language_setting, load_yaml
from rigwatch.environment import split_host_port, unknown_variables

_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
# Anyone who can reach the webhook and guess the token can post fake alerts (or fake "resolved"
# notices that hide real ones); 16 characters is the least that cannot be guessed online.
WEBHOOK_TOKEN_MIN_CHARS = 16

KNOWN_ENVIRONMENT = {
    "ALERT_BOT_WEBHOOK_TOKEN",
    "ALERT_BOT_WEBHOOK_TOKEN_FILE",
    "ALERT_BOT_LISTEN",
    "ALERT_BOT_DB",
    "ALERT_BOT_CONFIG",
    "ALERT_BOT_LOG_LEVEL",
}


def unknown_environment(env: dict[str, str] | None = None) -> list[str]:
    """One sentence per ALERT_BOT_* variable that is no setting, with the nearest that is."""
    return unknown_variables("ALERT_BOT_", KNOWN_ENVIRONMENT, "rigwatch-bot", env)


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


def _listen(value: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(value)
    except ValueError as exc:
        raise ConfigError("ALERT_BOT_LISTEN", str(exc)) from None
    return host or "0.0.0.0", port


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


def load_first_run_config(env: dict[str, str] | None = None) -> FirstRunConfig:
    """What the first-run mode needs: the bot token, the Bot API server and, when a YAML file
    is already given, the language it answers in; nothing else."""
    env = dict(os.environ if env is None else env)
    language = "en"
    config_path = env.get("ALERT_BOT_CONFIG", "").strip()
    if config_path:
        data = load_yaml(config_path)
        if data.get("language") is not None:
            language = language_setting(data["language"])
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
