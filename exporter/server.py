"""HTTP side of the exporter: /metrics, a landing page at / and /healthz.

Served by rigwatch.httpserver (h11 under one event loop): a pool of worker threads answers
complete requests, so two Prometheus servers scraping at once each get a full scrape (the
collectors share in-flight work), while idle, slow or flooding clients are bounded by
HTTP_LIMITS and never hold a thread.
"""

from __future__ import annotations

import gzip
import html
import threading

from exporter import __version__
from exporter.collectors import create_collectors, needs_nvml
from exporter.exposition import CONTENT_TYPE
from exporter.nvml.session import NvmlSession
from exporter.scrape import Scraper
from exporter.settings import Settings
from rigwatch.httpserver import HardenedHTTPServer, Limits, Request, Response
from rigwatch.logs import logger

LOG = logger("exporter", "http")

# Answer this much before Prometheus gives up, so what we have still arrives in time.
HEADER_MARGIN_FRACTION = 0.1
HEADER_MARGIN_MIN_SECONDS = 0.25
MIN_DEADLINE_SECONDS = 0.1


def scrape_deadline(configured: float, header: str | None) -> float:
    """The deadline for one scrape: the configured one, lowered under Prometheus's timeout."""
    if not header:
        return configured
    try:
        prometheus_timeout = float(header)
    except ValueError:
        return configured
    if prometheus_timeout <= 0:
        return configured
    margin = max(prometheus_timeout * HEADER_MARGIN_FRACTION, HEADER_MARGIN_MIN_SECONDS)
    return max(MIN_DEADLINE_SECONDS, min(configured, prometheus_timeout - margin))


# Prometheus sends Accept-Encoding: gzip. Level 1 shrinks a full 8-GPU scrape about tenfold
# (71 kB to 7 kB) for about 0.3 ms of CPU; higher levels save a few hundred bytes more for
# three times the CPU. Bodies this small are not worth a gzip header.
GZIP_LEVEL = 1
GZIP_MIN_BYTES = 1024

# A scrape request is a few hundred bytes: 10 s to send it is generous. Prometheus keeps its
# connection alive between scrapes (every 15-60 s), hence the 2-minute idle allowance. 512
# connections stay well inside the 1,024 descriptors systemd gives by default; 16 workers
# answer 100 parallel scrapers in about one scrape's time, since they share in-flight work.
# Prometheus pauses a whole scrape interval between requests: a worker does not wait on the
# connection for the next one.
HTTP_LIMITS = Limits(
    max_connections=512,
    workers=16,
    request_timeout=10.0,
    idle_timeout=120.0,
    backlog=1024,
    next_request_wait=0.0,
    max_body_bytes=64 * 1024,
)


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (named, or `*`, with a q above 0)."""
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def nvml_state(session: NvmlSession | None) -> str:
    """What a person checks first, in one line: NVML's state, the card count, the driver."""
    if session is None:
        return "NVML: not used (every GPU collector is off)"
    if not session.up:
        return f"NVML: down ({session.reason}); retrying, no GPU metrics meanwhile"
    cards = [gpu for gpu in session.gpus() if gpu.present]
    lost = sum(1 for gpu in cards if not gpu.up)
    text = f"NVML: up · {len(cards)} card{'' if len(cards) == 1 else 's'}"
    if lost:
        text += f" ({lost} lost)"
    text += f" · driver {session.driver_version or 'unknown'}"
    if session.cuda_version:
        text += f" (CUDA {session.cuda_version})"
    return text


def landing_page(settings: Settings, session: NvmlSession | None = None) -> bytes:
    collectors = "".join(f"<li>{html.escape(name)}</li>" for name in sorted(settings.collectors))
    return (
        "<!DOCTYPE html><html><head><title>rigwatch exporter</title></head><body>"
        f"<h1>rigwatch exporter {html.escape(__version__)}</h1>"
        f"<p><b>{html.escape(nvml_state(session))}</b></p>"
        '<p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>'
        f"<p>Enabled collectors:</p><ul>{collectors}</ul>"
        "</body></html>"
    ).encode()


class _Handler:
    """The exporter's three pages; HEAD is answered as GET without the body (the server drops
    it). Nothing is checked before the body: GET needs no credential, and a body on it is read
    and discarded by the framing, never served as a request."""

    server_name = f"rigwatch-exporter/{__version__}"

    def __init__(self, exporter: ExporterServer) -> None:
        self.exporter = exporter

    def check(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return Response(
                405, b"method not allowed; try GET /metrics\n", headers={"Allow": "GET, HEAD"}
            )
        return None

    def handle(self, request: Request) -> Response:
        web_config = self.exporter.settings.web_config
        # On a worker, not in check(): a bcrypt check takes tens of milliseconds by design.
        # /healthz stays open: it says "ok" and nothing else, and container health checks and
        # load balancers probe it without credentials.
        if (
            web_config is not None
            and request.path != "/healthz"
            and not web_config.allows(request.header("Authorization"))
        ):
            headers = {"WWW-Authenticate": 'Basic realm="rigwatch-exporter"'}
            return Response(401, b"unauthorized\n", headers=headers)
        path = request.path
        if path == "/metrics":
            exporter = self.exporter
            timeout = scrape_deadline(
                exporter.settings.scrape_timeout_seconds,
                request.header("X-Prometheus-Scrape-Timeout-Seconds"),
            )
            try:
                body = exporter.scraper.render(timeout)
            except Exception:  # noqa: BLE001 - never a broken connection for a scrape
                LOG.exception("scrape failed")
                return Response(500, b"scrape failed; see the exporter's log\n", "text/plain")
            headers = {"Vary": "Accept-Encoding"}
            if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.header("Accept-Encoding")):
                body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
                headers["Content-Encoding"] = "gzip"
            return Response(200, body, CONTENT_TYPE, headers)
        if path == "/":
            # Built per request: NVML's state changes while the exporter runs.
            page = landing_page(self.exporter.settings, self.exporter.session)
            return Response(200, page, "text/html; charset=utf-8")
        if path == "/healthz":
            return Response(200, b"ok\n")
        return Response(404, b"not found; try /metrics\n")


class ExporterServer:
    """The exporter assembled: NVML session, collectors, scraper and HTTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Bind first: a port in use should fail before anything else starts.
        self.httpd = HardenedHTTPServer(
            (settings.listen_host, settings.listen_port), _Handler(self), HTTP_LIMITS
        )
        self.port = self.httpd.server_address[1]
        self.session: NvmlSession | None = None
        if needs_nvml(settings):
            self.session = NvmlSession(settings.nvml_retry_max_seconds, settings.sysfs)
            self.session.start()
        self.scraper = Scraper(
            create_collectors(settings, self.session), settings.scrape_timeout_seconds
        )
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.scraper.close()
        if self.session is not None:
            self.session.close()
