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
from alert_bot.current import CurrentValues
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
from alert_bot.webhook import Notification, PayloadError, dedupe_key, parse_notification, route
from rigwatch.httpserver import HardenedHandler, HardenedHTTPServer, Limits
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
        self.server = _BotHTTPServer((config.listen_host, config.listen_port), self)
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
            beating = [a for a in heartbeat if a["status"] == "firing"]
            if beating:
                self.watchdog.heartbeat(beating[0]["labels"])
            stored = True
            destinations = []
            if others:
                payload = dict(notification.payload, alerts=others)
                destinations = route(Notification(payload), self.config)
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


class _BotHTTPServer(HardenedHTTPServer):
    def __init__(self, address: tuple[str, int], app: BotApp):
        self.app = app
        # read_timeout bounds a whole request (headers and body, however slowly they trickle)
        # and an idle kept-alive connection; SQLite commits one at a time, so a few workers
        # are as fast as many.
        limits = Limits(
            max_connections=app.config.max_connections,
            workers=8,
            request_timeout=app.config.read_timeout,
            idle_timeout=app.config.read_timeout,
            backlog=1024,
        )
        super().__init__(address, _Handler, limits)


class _Handler(HardenedHandler):
    server: _BotHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "rigwatch-bot"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (~40 ms) on every kept-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes | str, content_type: str = "text/plain") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header(
            "Content-Type",
            content_type
            + (
                "; charset=utf-8"
                if "text" in content_type and "charset" not in content_type
                else ""
            ),
        )
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(app.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            if app.healthy():
                self._reply(200, "ok\n")
            else:
                self._reply(503, "unhealthy: store, delivery worker or update loop down\n")
        elif path == "/":
            self._reply(200, LANDING_PAGE, "text/html")
        else:
            self._reply(404, "not found\n")

    def do_POST(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path != WEBHOOK_PATH:
            self.close_connection = True
            app.metrics.rejected.labels("not_found").inc()
            self._reply(404, f"not found: the webhook is POST {WEBHOOK_PATH}\n")
            return
        if not app.authorized(self.headers.get("Authorization")):
            self.close_connection = True
            app.metrics.rejected.labels("unauthorized").inc()
            self._reply(401, "missing or wrong bearer token\n")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            app.metrics.rejected.labels("bad_payload").inc()
            self._reply(411, "Content-Length required\n")
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            app.metrics.rejected.labels("bad_payload").inc()
            self._reply(400, "bad Content-Length\n")
            return
        if length > app.config.max_body_bytes:
            self.close_connection = True
            app.metrics.rejected.labels("too_large").inc()
            self._reply(413, f"body over {app.config.max_body_bytes} bytes\n")
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            app.metrics.rejected.labels("bad_payload").inc()
            self._reply(400, "body shorter than Content-Length\n")
            return
        try:
            result = app.ingest(body)
        except Exception:  # noqa: BLE001 - never a 2xx, never a dropped connection
            log.exception("webhook handling failed")
            result = WebhookResult(500, "internal error, retry later\n")
        self._reply(result.status, result.text)

    def do_PUT(self) -> None:
        self.close_connection = True
        self._reply(405, json.dumps({"error": "method not allowed"}))

    do_DELETE = do_PUT
    do_PATCH = do_PUT
