"""The pieces both programs share: the backoff formula and the log vocabulary."""

from __future__ import annotations

import logging

import pytest

from rigwatch.backoff import Backoff
from rigwatch.logs import LINE_FORMAT, logger, parse_level


def test_backoff_doubles_up_to_its_maximum_and_resets():
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_backoff_jitter_only_shortens_within_its_share():
    backoff = Backoff(initial=10.0, maximum=10.0, jitter=0.5)
    waits = [backoff.next() for _ in range(200)]
    assert all(5.0 <= wait <= 10.0 for wait in waits)
    assert len({round(wait, 6) for wait in waits}) > 1


def test_backoff_survives_a_huge_failure_count():
    assert Backoff(initial=1.0, maximum=60.0).delay(10_000) == 60.0
    assert Backoff(initial=1.0, maximum=60.0).delay(0) == 0.0


def test_log_levels_and_logger_names():
    assert parse_level(" WARNING ") == "warning"
    with pytest.raises(ValueError, match="expected one of debug, info, warning, error"):
        parse_level("chatty")
    assert logger("bot", "delivery").name == "rigwatch.bot.delivery"
    assert logger("exporter").name == "rigwatch.exporter"
    record = logging.LogRecord("rigwatch.bot", logging.INFO, "x", 1, "hello", None, None)
    assert logging.Formatter(LINE_FORMAT).format(record).endswith("level=INFO rigwatch.bot: hello")
