"""`rigwatch-bot` / `python -m alert_bot`: read the configuration, start the bot, run until
SIGTERM or SIGINT. A configuration problem prints one line naming the key and exits 2."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from alert_bot import __version__
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

    from alert_bot.config import ConfigError, load_config

    try:
        config = load_config()
        if config.template_source is not None:
            from alert_bot.render import AlertRenderer, LinkSettings

            AlertRenderer(LinkSettings("", "", ""), config.template_source)
    except ConfigError as exc:
        print(f"rigwatch-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("rigwatch-bot: configuration OK")
        return 0

    configure_logs(args.log_level)
    from alert_bot.app import BotApp
    from alert_bot.store import Store, StoreError
    from alert_bot.telegram import TelegramClient, configure_api, install_scrubber
    from alert_bot.upstream import AlertmanagerClient, PrometheusClient

    install_scrubber(config.telegram_token)
    try:
        store = Store(config.db_path)
    except StoreError as exc:
        print(f"rigwatch-bot: configuration error: ALERT_BOT_DB: {exc}", file=sys.stderr)
        return 2
    configure_api(config.telegram_api_url)
    telegram = TelegramClient(config.telegram_token)
    try:
        app = BotApp(
            config,
            telegram,
            PrometheusClient(config.prometheus_url),
            AlertmanagerClient(config.alertmanager_url),
            store,
        )
    except OSError as exc:
        print(
            f"rigwatch-bot: configuration error: ALERT_BOT_LISTEN: cannot listen on "
            f"{config.listen_host}:{config.listen_port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    app.start()
    stopping.wait()
    logger("bot").info("stopping")
    app.stop()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
