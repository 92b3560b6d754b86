"""`rigwatch-bot` / `python -m alert_bot`: read the configuration, start the bot, run until
SIGTERM or SIGINT. A configuration problem (a token Telegram rejects included) prints one line
naming the key and exits 2; a runtime failure (the port is taken) exits 1, so that systemd's
RestartPreventExitStatus=2 retries only what a restart can fix."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from alert_bot import __version__, i18n
from alert_bot.alerts.render import AlertRenderer, LinkSettings
from alert_bot.app import BotApp
from alert_bot.chat import first_run
from alert_bot.config import (
    ConfigError,
    load_config,
    load_first_run_config,
    unknown_environment,
)
from alert_bot.config import first_run as first_run_pending
from alert_bot.store import Store, StoreError
from alert_bot.store.schema import LATEST
from alert_bot.telegram.client import (
    TelegramClient,
    TelegramError,
    configure_api,
    install_scrubber,
)
from alert_bot.upstream.alertmanager import AlertmanagerClient
from alert_bot.upstream.prometheus import PrometheusClient
from rigwatch.backoff import Backoff
from rigwatch.logs import LEVELS, logger, parse_level
from rigwatch.logs import configure as configure_logs


def _level(text: str) -> str:
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rigwatch-bot",
        description="Relays Alertmanager notifications to Telegram and answers chat commands. "
        "Configured through environment variables (TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID, "
        "ALERT_BOT_WEBHOOK_TOKEN, ...) and the optional YAML file named by ALERT_BOT_CONFIG; "
        "see docs/alert-bot.md.",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default=os.environ.get("ALERT_BOT_LOG_LEVEL", "info"),
        type=_level,
        metavar="LEVEL",
        help=f"{', '.join(LEVELS)} (any case; default $ALERT_BOT_LOG_LEVEL or info)",
    )
    # The flag's spelling before it matched the exporter's; kept for existing units.
    parser.add_argument("--log-level", dest="log_level", type=_level, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"rigwatch-bot {__version__}")
    args = parser.parse_args(argv)

    if first_run_pending() and not args.check_config:
        return _first_run(args.log_level)
    try:
        config = load_config()
        i18n.translations(config.language)  # its catalog loads (or --check-config says why)
        if config.template_source is not None:
            AlertRenderer(LinkSettings("", "", ""), config.template_source)
    except ConfigError as exc:
        print(f"rigwatch-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("rigwatch-bot: configuration OK")
        return 0

    configure_logs(args.log_level)
    for note in unknown_environment():
        logger("bot").warning("%s", note)
    install_scrubber(config.telegram_token)
    try:
        store = Store(config.db_path)
    except StoreError as exc:
        print(f"rigwatch-bot: configuration error: ALERT_BOT_DB: {exc}", file=sys.stderr)
        return 2
    if store.database.upgraded_from is not None:
        logger("bot").info(
            "store %s upgraded from schema version %d to %d",
            store.path,
            store.database.upgraded_from,
            LATEST,
        )
    telegram, stopping, verdict = _connect(config)
    if verdict == ACCEPTED:
        verdict = _check_chats(telegram, config)
    if verdict == REJECTED:
        store.close()
        return 2
    try:
        app = BotApp(
            config,
            telegram,
            PrometheusClient(config.prometheus_url),
            AlertmanagerClient(config.alertmanager_url),
            store,
        )
    except OSError as exc:
        # A runtime failure, not a configuration error: the port may be free in a moment.
        print(
            f"rigwatch-bot: cannot listen on {config.listen_host}:{config.listen_port} "
            f"(ALERT_BOT_LISTEN): {exc.strerror}",
            file=sys.stderr,
        )
        store.close()
        return 1
    app.start()
    status = 0
    # Telegram could not be asked at start: alerts are taken and queued meanwhile, and the
    # token is asked about again until Telegram answers.
    backoff = Backoff(initial=1.0, maximum=30.0)
    while verdict == UNKNOWN and not stopping.wait(backoff.next()):
        verdict = _check_token(telegram)
    if verdict == REJECTED:
        status = 2
    else:
        stopping.wait()
    logger("bot").info("stopping")
    app.stop()
    store.close()
    return status


ACCEPTED, REJECTED, UNKNOWN = "accepted", "rejected", "unknown"


def _connect(config) -> tuple[TelegramClient, threading.Event, str]:
    """The Telegram client at the configured Bot API, the event SIGTERM/SIGINT set, and what
    Telegram says of the token (ACCEPTED, REJECTED or UNKNOWN)."""

    configure_api(config.telegram_api_url)
    telegram = TelegramClient(config.telegram_token)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return telegram, stopping, _check_token(telegram)


def _check_token(telegram) -> str:
    """Ask Telegram who the bot is (getMe): ACCEPTED, REJECTED (the one line is printed) or
    UNKNOWN when Telegram could not be reached."""

    log = logger("bot")
    try:
        me = telegram.get_me()
    except TelegramError as exc:
        status = exc.failure.status
        if status == 401:
            print(
                "rigwatch-bot: configuration error: TELEGRAM_BOT_TOKEN: Telegram rejects it "
                "(401 Unauthorized): copy the token @BotFather gave again, or /revoke and use "
                "the new one",
                file=sys.stderr,
            )
            return REJECTED
        if status == 404:
            print(
                "rigwatch-bot: configuration error: TELEGRAM_API_URL: the server answers "
                "404 Not Found to getMe: it is not a Bot API server's base URL",
                file=sys.stderr,
            )
            return REJECTED
        log.warning("cannot check the bot token with Telegram yet (%s); will retry", exc)
        return UNKNOWN
    log.info("Telegram accepts the bot token: this is @%s", me["username"])
    return ACCEPTED


def _check_chats(telegram, config) -> str:
    """Ask Telegram about every configured chat (getChat): a chat it does not know, or that
    the bot may not write to, is a configuration error naming the setting and the id (else the
    first alert would be dead-lettered). REJECTED (the line printed) or ACCEPTED; a chat
    Telegram cannot be asked about now is left to delivery, which retries."""

    chats = [("TELEGRAM_CHAT_ID", config.default_chat_id)] + [
        (f"ALERT_BOT_CONFIG routes[{number}].chat_id", route.chat_id)
        for number, route in enumerate(config.routes)
    ]
    for setting, chat_id in chats:
        try:
            telegram.get_chat(chat_id)
        except TelegramError as exc:
            if exc.failure.status in (400, 403):
                print(
                    f"rigwatch-bot: configuration error: {setting}: Telegram cannot reach chat "
                    f"{chat_id} ({exc.description}): check the id (/start in the chat shows it) "
                    "and that the bot is a member there",
                    file=sys.stderr,
                )
                return REJECTED
            logger("bot").warning("cannot check chat %s with Telegram yet (%s)", chat_id, exc)
    return ACCEPTED


def _first_run(log_level: str) -> int:
    """No default chat yet: only answer /start, so the owner learns the chat's id."""

    try:
        config = load_first_run_config()
        i18n.use(config.language)
    except ConfigError as exc:
        print(f"rigwatch-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logs(log_level)
    install_scrubber(config.telegram_token)
    telegram, stopping, verdict = _connect(config)
    if verdict == REJECTED:
        return 2
    worker = threading.Thread(
        target=first_run.run, args=(telegram, stopping), name="first-run", daemon=True
    )
    worker.start()
    stopping.wait()
    logger("bot").info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
