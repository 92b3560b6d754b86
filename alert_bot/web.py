"""The bot's HTTP face: Alertmanager's webhook (POST /alertmanager with the bearer token), the
bot's own /metrics, /healthz and a landing page, on the hardened server both programs share.
A request is refused as soon as its headers show it must be (wrong method, path or token, no or
too large a Content-Length), before ``100 Continue`` and before a byte of its body is read;
every refusal is counted by reason."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alert_bot.alerts.intake import IntakeResult
from rigwatch.httpserver import HardenedHTTPServer, Limits, Request, Response
from rigwatch.logs import logger

if TYPE_CHECKING:
    from alert_bot.app import BotApp

log = logger("bot", "app")

WEBHOOK_PATH = "/alertmanager"
LANDING_PAGE = """<!doctype html><html><head><title>rigwatch alert bot</title></head><body>
<h1>rigwatch alert bot</h1><p>Alertmanager webhook: POST <code>/alertmanager</code></p>
<p><a href="/metrics">metrics</a> · <a href="/healthz">health</a></p></body></html>
"""


def bot_server(app: BotApp) -> HardenedHTTPServer:
    config = app.config
    # read_timeout bounds a whole request (headers and body, however slowly they trickle)
    # and an idle kept-alive connection; SQLite commits one at a time, so a few workers
    # are as fast as many.
    limits = Limits(
        max_connections=config.max_connections,
        workers=8,
        request_timeout=config.read_timeout,
        idle_timeout=config.read_timeout,
        backlog=1024,
        max_body_bytes=config.max_body_bytes,
    )
    return HardenedHTTPServer((config.listen_host, config.listen_port), _Handler(app), limits)


def _text(status: int, body: str, close: bool = False) -> Response:
    return Response(status, body.encode(), close=close)


class _Handler:
    """``check`` runs as soon as a request's headers are in; ``handle`` once its body is."""

    server_name = "rigwatch-bot"

    def __init__(self, app: BotApp) -> None:
        self.app = app
        self.expected = ("Bearer " + app.config.webhook_token).encode()

    def _refuse(self, reason: str | None, status: int, text: str) -> Response:
        if reason is not None:
            self.app.metrics.rejected.labels(reason).inc()
        return _text(status, text, close=True)

    def check(self, request: Request) -> Response | None:
        if request.method in ("GET", "HEAD"):
            return None
        if request.method != "POST":
            return self._refuse(None, 405, "method not allowed\n")
        if request.path != WEBHOOK_PATH:
            return self._refuse(
                "not_found", 404, f"not found: the webhook is POST {WEBHOOK_PATH}\n"
            )
        token = (request.header("Authorization") or "").encode()
        if not hmac.compare_digest(token, self.expected):
            return self._refuse("unauthorized", 401, "missing or wrong bearer token\n")
        length = request.header("Content-Length")
        if length is None:
            # h11 has refused a malformed Content-Length already; a chunked body has none.
            return self._refuse("bad_payload", 411, "Content-Length required\n")
        limit = self.app.config.max_body_bytes
        if int(length) > limit:
            return self._refuse("too_large", 413, f"body over {limit} bytes\n")
        return None

    def handle(self, request: Request) -> Response:
        app = self.app
        if request.method == "POST":
            try:
                result = app.intake.take(request.body)
            except Exception:  # noqa: BLE001 - never a 2xx, never a dropped connection
                log.exception("webhook handling failed")
                result = IntakeResult(500, "internal error, retry later\n")
            return _text(result.status, result.text)
        path = request.path
        if path == "/metrics":
            return Response(200, generate_latest(app.metrics.registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            if app.healthy():
                return _text(200, "ok\n")
            return _text(503, "unhealthy: store, delivery worker or update loop down\n")
        if path == "/":
            return Response(200, LANDING_PAGE.encode(), "text/html; charset=utf-8")
        return _text(404, "not found\n")
