"""Fixtures for the alert bot's tests: a fake Telegram per test, stopped even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alert_bot.botkit import BOT_TOKEN
from tests.alert_bot.fake_telegram import FakeTelegram


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram(BOT_TOKEN).start()
    try:
        yield fake
    finally:
        fake.stop()
