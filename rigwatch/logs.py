"""One log vocabulary for both programs: loggers are named ``rigwatch.<program>.<part>``
(``rigwatch.exporter.nvml``, ``rigwatch.bot.delivery``), every line has one shape, and the
level is spelled the same on both command lines (``--log.level``)."""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
LINE_FORMAT = "%(asctime)s level=%(levelname)s %(name)s: %(message)s"


def parse_level(text: str) -> str:
    """The level's canonical spelling (lower case); ValueError names the accepted ones."""
    level = text.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{text!r}: expected one of {', '.join(LEVELS)}")
    return level


def configure(level: str) -> None:
    """Send every ``rigwatch.*`` logger's lines to stderr in the shared format."""
    logging.basicConfig(level=parse_level(level).upper(), format=LINE_FORMAT, stream=sys.stderr)


def logger(program: str, part: str | None = None) -> logging.Logger:
    """``logger("bot", "delivery")`` is ``rigwatch.bot.delivery``."""
    return logging.getLogger(f"rigwatch.{program}" + (f".{part}" if part else ""))
