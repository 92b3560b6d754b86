"""rigwatch's alert bot: relays Alertmanager notifications to Telegram and answers chat commands."""

__version__ = "0.1.0"
