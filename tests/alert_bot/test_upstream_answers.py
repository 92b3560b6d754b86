"""The bot as a client of Prometheus: a real HTTP server standing in for a Prometheus that
answers the wrong shape, answers 300 MiB or trickles a byte at a time; and a real Prometheus
stopped mid-test. Every command gets one clear line in the bot's language, a slow upstream
holds up neither /start nor /help, and the bot's memory does not grow with the answer."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from alert_bot import i18n
from alert_bot.i18n import format_time
from alert_bot.upstream.fetch import MAX_ANSWER_BYTES
from tests.alert_bot.botkit import CHAT, bot_env, running_bot
from tests.alert_bot.fake_telegram import parse_telegram_html
from tests.alert_bot.runkit import RestartablePrometheus
from tests.servers import have_binary
from tests.support import wait_until

BODIES = {
    "array": b"[]",
    "missing": b'{"status": "success"}',
    "result-not-a-list": b'{"status": "success", "data": {"resultType": "vector", "result": 7}}',
    "text": b"<html>a proxy's error page</html>",
}
HUGE = 300 << 20


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    yield
    i18n.use("en")


class StandIn:
    """An HTTP server answering every request as `mode` says."""

    def __init__(self) -> None:
        self.mode = "array"
        self.stopping = threading.Event()
        self.trickled = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                with contextlib.suppress(OSError):  # the bot hung up: what it should do
                    stand_in.answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.mode in BODIES:
            body = BODIES[self.mode]
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_header("Content-Length", str(HUGE))
        handler.end_headers()
        if self.mode == "huge":
            block = b" " * (1 << 20)
            for _ in range(HUGE >> 20):
                handler.wfile.write(block)
        else:  # trickle: a byte every half second, for a minute
            for _ in range(120):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                self.trickled += 1
                if self.stopping.wait(0.5):
                    return

    def __enter__(self) -> StandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def _ask(telegram, text: str) -> str:
    before = len(telegram.sent(CHAT))
    telegram.inject_message(CHAT, text)
    wait_until(lambda: len(telegram.sent(CHAT)) > before, timeout=20, what=text)
    return parse_telegram_html(telegram.sent(CHAT)[before].params["text"])


@pytest.mark.parametrize("language", ["en", "ru"])
def test_an_answer_of_the_wrong_shape_is_one_line_in_the_bots_language(
    tmp_path, telegram, caplog, language
):
    expected = {
        "en": "⚠️ Prometheus gave an answer the bot cannot use",
        "ru": "⚠️ Prometheus прислал ответ, который бот не может разобрать",
    }[language]
    with StandIn() as stand_in:
        env = bot_env(tmp_path, telegram.url, {"language": language}, prometheus=stand_in.url)
        with running_bot(env):
            for mode in BODIES:
                stand_in.mode = mode
                for command in ("/gpu", "/status", "/cpu", "/energy"):
                    caplog.clear()
                    assert _ask(telegram, command) == expected, (mode, command)
                    shown = [r for r in caplog.records if "without data" in r.getMessage()]
                    assert len(shown) == 1, (mode, command, caplog.records)
                    assert not [r for r in caplog.records if r.exc_info], (mode, command)


def test_a_huge_answer_is_refused_without_growing_the_bot(tmp_path, telegram):
    with StandIn() as stand_in:
        stand_in.mode = "huge"
        env = bot_env(tmp_path, telegram.url, prometheus=stand_in.url)
        with running_bot(env):
            assert _ask(telegram, "/start")  # the bot's threads are up before measuring
            before = psutil.Process().memory_info().rss
            for _ in range(3):
                text = _ask(telegram, "/gpu")
                assert text == f"⚠️ Prometheus answered more than {MAX_ANSWER_BYTES >> 20} MiB"
            grown = psutil.Process().memory_info().rss - before
    # 3 × 300 MiB offered. Read whole, one answer alone grows the bot by 300 MiB; capped, a
    # few threads (command workers, the run watch) each held at most 8 MiB, then freed.
    assert grown < 64 << 20, f"grew {grown >> 20} MiB"


def test_a_trickling_answer_is_cut_off_and_holds_up_no_other_command(tmp_path, telegram):
    with StandIn() as stand_in:
        stand_in.mode = "trickle"
        env = bot_env(tmp_path, telegram.url, prometheus=stand_in.url)
        with running_bot(env):  # the bot's Prometheus client: a 5 s total deadline
            before = len(telegram.sent(CHAT))
            telegram.inject_message(CHAT, "/status")
            wait_until(lambda: stand_in.trickled > 0, timeout=20, what="the trickle begun")
            # /start and /help are answered while /status still waits on Prometheus.
            start = _ask(telegram, "/start")
            help_text = _ask(telegram, "/help")
            assert str(CHAT) in start and "/status" in help_text
            texts = [parse_telegram_html(c.params["text"]) for c in telegram.sent(CHAT)[before:]]
            assert not any("Prometheus" in t for t in texts), texts
            wait_until(
                lambda: any(
                    "Prometheus answered too slowly" in parse_telegram_html(c.params["text"])
                    for c in telegram.sent(CHAT)[before:]
                ),
                timeout=20,
                what="/status answered",
            )
            # Cut off by the deadline, not at the end of the trickle (60 s of it).
            assert stand_in.trickled < 120


@pytest.mark.skipif(not have_binary("prometheus"), reason="needs the prometheus binary")
@pytest.mark.parametrize("language", ["en", "ru"])
def test_an_outage_is_admitted_with_since_when(tmp_path, telegram, language):
    prometheus = RestartablePrometheus(
        tmp_path / "prometheus",
        "global: {scrape_interval: 1s}\nscrape_configs: []\n",
    )
    prometheus.start()
    try:
        settings = {"language": language, "timezone": "Europe/Moscow", "runs": {"interval": "1s"}}
        env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
        with running_bot(env) as (app, _):
            before_outage = _ask(telegram, "/runs")
            assert "No run is running" in before_outage or "ничего не обучается" in before_outage
            stopped = time.time()
            prometheus.stop()
            answers = {c: _ask(telegram, c) for c in ("/status", "/gpu", "/cpu", "/graph gpu")}
            answers.update({c: _ask(telegram, c) for c in ("/energy", "/runs")})
            asked = time.time()
    finally:
        prometheus.stop()
    zone = __import__("zoneinfo").ZoneInfo("Europe/Moscow")
    moments = {format_time(stopped, zone), format_time(asked, zone)}
    phrase = {
        "en": ("Prometheus unreachable (ConnectionError) since", "I cannot tell right now."),
        "ru": ("Prometheus недоступен (ConnectionError) с", "сейчас я не могу этого знать."),
    }[language]
    for command, text in answers.items():
        first = text.splitlines()[0]
        assert first.startswith("⚠️ " + phrase[0]), (command, text)
        assert first.endswith(phrase[1]), (command, text)
        assert any(m in first for m in moments), (command, text, moments)
    assert "No run is running" not in answers["/runs"]
    assert "ничего не обучается" not in answers["/runs"]
