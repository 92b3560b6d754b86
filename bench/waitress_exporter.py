"""The peer bench/bench_hostile.py measures rigwatch's HTTP layer against: the exporter's own
collectors and scraper, served as a WSGI app (prometheus_client's make_wsgi_app over a registry
holding the scraper) by waitress instead of rigwatch's h11 loop. Run by the bench in
bench/.venv-waitress (waitress is never a dependency of rigwatch) with PYTHONPATH at the
checkout under test:

    bench/.venv-waitress/bin/python bench/waitress_exporter.py --port 9999 [exporter flags]

waitress gets rigwatch's own limits where it has the same knob (workers, connection cap, idle
allowance, listen backlog, header and body caps), so a difference in the table is the server's,
not a setting's. What it has no knob for (a total deadline per request, evicting idle
connections at the cap) is what the table shows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

import waitress
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric

from exporter.cli import parse_settings, tune_gc
from exporter.collectors import create_collectors
from exporter.scrape import Scraper
from exporter.server import HTTP_LIMITS
from rigwatch.httpserver import MAX_HEADER_BYTES


class ScraperCollector:
    """The exporter's scraper as a prometheus_client collector: each collect() is one scrape."""

    def __init__(self, scraper: Scraper) -> None:
        self.scraper = scraper

    def collect(self) -> Iterable[Metric]:
        return self.scraper.collect()


def wsgi_app(scraper: Scraper) -> Callable:
    """/healthz answers ok (the bench's readiness probe); every other path is the scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScraperCollector(scraper))
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\n"]
        return metrics(environ, start_response)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args, exporter_flags = parser.parse_known_args()
    settings = parse_settings(exporter_flags)
    scraper = Scraper(create_collectors(settings, None), settings.scrape_timeout_seconds)
    app = wsgi_app(scraper)
    tune_gc()
    waitress.serve(
        app,
        host="127.0.0.1",
        port=args.port,
        threads=HTTP_LIMITS.workers,
        connection_limit=HTTP_LIMITS.max_connections,
        channel_timeout=HTTP_LIMITS.idle_timeout,
        backlog=HTTP_LIMITS.backlog,
        max_request_header_size=MAX_HEADER_BYTES,
        max_request_body_size=HTTP_LIMITS.max_body_bytes,
        # poll(), not select(): select() cannot watch a descriptor numbered 1,024 or above.
        asyncore_use_poll=True,
        ident="rigwatch-exporter-on-waitress",
    )


if __name__ == "__main__":
    main()
