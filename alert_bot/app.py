"""The bot as one object: the HTTP server (Alertmanager webhook, /metrics, /healthz), the
delivery worker, the Telegram update loop and the watchdog, wired from collaborators that the
caller builds (so tests hand it local servers and a store in a temporary directory)."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alert_bot import __version__, i18n
from alert_bot.chat.updates import UpdateLoop
from alert_bot.config import Config
from alert_bot.current import Beginnings, CurrentValues
from alert_bot.delivery import ChartWorker, DeliveryWorker
from alert_bot.metrics import BotMetrics
from alert_bot.ratelimit import FloodLimiter
from alert_bot.render import AlertRenderer, LinkSettings
from alert_bot.runs.price import register_price
from alert_bot.runs.watch import RunWatch
from alert_bot.store import Store, StoreError
from alert_bot.telegram import TelegramClient
from alert_bot.upstream import AlertmanagerClient, PrometheusClient
from alert_bot.watchdog import Watchdog
from alert_bot.webhook import PayloadError, dedupe_key, parse_notification, route
from rigwatch.httpserver import HardenedHTTPServer, Limits, Request, Response
from rigwatch.logs import logger

log = logger("bot", "app")

WEBHOOK_PATH = "/alertmanager"
LANDING_PAGE = """<!doctype html><html><head><title>rigwatch alert bot</title></head><body>
<h1>rigwatch alert bot</h1><p>Alertmanager webhook: POST <code>/alertmanager</code></p>
<p><a href="/metrics">metrics</a> · <a href="/healthz">health</a></p></body></html>
"""


class WebhookResult:
    def __init__(self, status: int, text: str):
        self.status = status
        self.text = text


class BotApp:
    def __init__(
        self,
        config: Config,
        telegram: TelegramClient,
        prometheus: PrometheusClient,
        alertmanager: AlertmanagerClient,
        store: Store,
        clock: Callable[[], float] = time.time,
        run_updates: bool = True,
    ):
        self.config = config
        self.store = store
        self.clock = clock
        i18n.use(config.language)
        self.metrics = BotMetrics(lambda: store.outbox.queue_stats(clock()))
        register_price(self.metrics.registry, config, clock)
        self.limiter = FloodLimiter(config.rate_limits)
        self.renderer = AlertRenderer(
            LinkSettings(config.grafana_url, config.grafana_dashboard_uid, config.alertmanager_url),
            config.template_source,
            config.zone,
            CurrentValues(prometheus),
            Beginnings(prometheus),
        )
        self.charts = ChartWorker(
            config, store, telegram, self.metrics, self.limiter, prometheus, clock
        )
        self.worker = DeliveryWorker(
            config, store, telegram, self.renderer, self.metrics, self.limiter, self.charts, clock
        )
        self.updates = UpdateLoop(
            config, store, telegram, prometheus, alertmanager, self.metrics, self.limiter, clock
        )
        self.watchdog = Watchdog(
            config, store, self.metrics, self.worker.wake, clock, alertmanager.silences
        )
        self.runs = (
            RunWatch(config, store, self.metrics, prometheus, self.worker.wake, clock)
            if config.runs.enabled
            else None
        )
        self.run_updates = run_updates
        self.server = HardenedHTTPServer(
            (config.listen_host, config.listen_port), _Handler(self), _bot_limits(self)
        )
        self._server_thread: threading.Thread | None = None
        self._last_prune = 0.0

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.worker.start()
        self.charts.start()
        if self.run_updates:
            self.updates.start()
        self.watchdog.start()
        if self.runs is not None:
            self.runs.start()
        self._server_thread = threading.Thread(
            target=self.server.serve_forever,
            name="http",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._server_thread.start()
        log.info(
            "rigwatch bot %s listening on %s:%s", __version__, self.config.listen_host, self.port
        )

    def stop(self) -> None:
        self.server.close()
        self.watchdog.stop()
        if self.runs is not None:
            self.runs.stop()
        self.updates.stop()
        self.worker.stop()
        self.charts.stop()

    def healthy(self) -> bool:
        try:
            self.store.outbox.queue_stats(self.clock())
            # A deleted or replaced file still reads and writes (through the open descriptor)
            # but loses everything at restart; a failing disk only shows on writes. After a
            # failed write, one small write here tells when the store works again.
            self.store.database.check()
            if self.store.database.write_failed:
                self.store.state.set("health_probe", str(self.clock()))
        except StoreError:
            return False
        # Without the update loop no command or button works: that is unhealthy too.
        return self.worker.alive() and (not self.run_updates or self.updates.alive())

    # --- the webhook ------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        expected = ("Bearer " + self.config.webhook_token).encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def ingest(self, body: bytes) -> WebhookResult:
        """Validate, store durably, then answer; 2xx only after the commit."""
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            self.metrics.rejected.labels("bad_payload").inc()
            return WebhookResult(400, f"bad notification: {exc}\n")
        now = self.clock()
        alerts = notification.alerts
        heartbeat = [a for a in alerts if self.watchdog.is_watchdog(a)]
        others = [a for a in alerts if not self.watchdog.is_watchdog(a)]
        try:
            beating = [a for a in heartbeat if a.status == "firing"]
            if beating:
                self.watchdog.heartbeat(dict(beating[0].labels))
            stored = True
            destinations = []
            if others:
                destinations = route(notification.with_alerts(others), self.config)
                stored = self.store.outbox.add(
                    destinations, now, dedupe_key(notification), self.config.dedupe_window
                )
            if now - self._last_prune > 600:
                self._last_prune = now
                self.store.prune(now, self.config.dedupe_window)
        except StoreError as exc:
            log.error("could not store a notification: %s", exc)
            return WebhookResult(503, "store unavailable, retry later\n")
        self.metrics.received.inc()
        if not stored:
            self.metrics.duplicates.inc()
            return WebhookResult(200, "duplicate, already stored\n")
        self.metrics.stored.inc(len(destinations))
        self.worker.wake()
        return WebhookResult(200, "stored\n")


def _bot_limits(app: BotApp) -> Limits:
    # read_timeout bounds a whole request (headers and body, however slowly they trickle)
    # and an idle kept-alive connection; SQLite commits one at a time, so a few workers
    # are as fast as many.
    return Limits(
        max_connections=app.config.max_connections,
        workers=8,
        request_timeout=app.config.read_timeout,
        idle_timeout=app.config.read_timeout,
        backlog=1024,
        max_body_bytes=app.config.max_body_bytes,
    )


def _text(status: int, body: str, close: bool = False) -> Response:
    return Response(status, body.encode(), close=close)


class _Handler:
    """The webhook and the bot's pages. ``check`` runs as soon as a request's headers are in:
    the bearer token and the body's declared size are checked there, before ``100 Continue``
    is sent and before a byte of the body is read."""

    server_name = "rigwatch-bot"

    def __init__(self, app: BotApp) -> None:
        self.app = app

    def check(self, request: Request) -> Response | None:
        app = self.app
        if request.method in ("GET", "HEAD"):
            return None
        if request.method != "POST":
            body = json.dumps({"error": "method not allowed"}).encode()
            return Response(405, body, "text/plain; charset=utf-8", close=True)
        if request.path != WEBHOOK_PATH:
            app.metrics.rejected.labels("not_found").inc()
            return _text(404, f"not found: the webhook is POST {WEBHOOK_PATH}\n", True)
        if not app.authorized(request.header("Authorization")):
            app.metrics.rejected.labels("unauthorized").inc()
            return _text(401, "missing or wrong bearer token\n", True)
        length_header = request.header("Content-Length")
        if length_header is None:
            # h11 has refused a malformed Content-Length already; a chunked body has none.
            app.metrics.rejected.labels("bad_payload").inc()
            return _text(411, "Content-Length required\n", True)
        if int(length_header) > app.config.max_body_bytes:
            app.metrics.rejected.labels("too_large").inc()
            return _text(413, f"body over {app.config.max_body_bytes} bytes\n", True)
        return None

    def handle(self, request: Request) -> Response:
        app = self.app
        if request.method == "POST":
            try:
                result = app.ingest(request.body)
            except Exception:  # noqa: BLE001 - never a 2xx, never a dropped connection
                log.exception("webhook handling failed")
                result = WebhookResult(500, "internal error, retry later\n")
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
