"""One request to Prometheus or Alertmanager and what can go wrong with it: an answer capped in
size and time, the error the chat shows (with when the service was first found unreachable),
and an answer the bot cannot use."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import requests

from alert_bot.i18n import N_, _

# Upstream answers are read into memory whole; a bigger one is refused before it grows the
# bot (a /graph range of 8 cards over 7 days is well under 1 MiB).
MAX_ANSWER_BYTES = 8 << 20

CHUNK_BYTES = 64 << 10


class UpstreamError(RuntimeError):
    """Prometheus or Alertmanager could not answer. str() is the English log line; text() is
    the line for the chat, in the bot's language. ``since`` is when the service was first
    found unreachable in this outage (None when it answered, only not usefully)."""

    def __init__(self, message: str, since: float | None = None, **fields: Any):
        super().__init__(message.format(**fields))
        self.message = message
        self.fields = fields
        self.since = since

    def text(self, moment: Any = None) -> str:
        """The chat's line; moment(seconds) formats the outage's start in local time."""
        line = _(self.message).format(**self.fields)
        if self.since is not None and moment is not None:
            line = _("{problem} since {time}: I cannot tell right now.").format(
                problem=line, time=moment(self.since)
            )
        return line


def read_capped(response: requests.Response, service: str, deadline: float) -> bytes:
    """The body, refused past MAX_ANSWER_BYTES or past the deadline (a total one: an answer
    trickling a byte at a time is cut off, not kept alive by each byte)."""
    body = bytearray()
    try:
        while True:
            if time.monotonic() > deadline:
                raise UpstreamError(N_("{service} answered too slowly"), service=service)
            chunk = response.raw.read1(CHUNK_BYTES)  # what has arrived, not a full chunk
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise UpstreamError(
                    N_("{service} answered more than {size} MiB"),
                    service=service,
                    size=MAX_ANSWER_BYTES >> 20,
                )
    except requests.RequestException as exc:
        raise UpstreamError(
            N_("{service} unreachable ({error})"), service=service, error=type(exc).__name__
        ) from None
    except OSError as exc:  # urllib3's timeouts and resets while reading the body
        raise UpstreamError(
            N_("{service} unreachable ({error})"), service=service, error=type(exc).__name__
        ) from None
    finally:
        response.close()


class Outage:
    """When a service was first found unreachable, until it answers again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None

    def failed(self) -> float:
        with self._lock:
            if self.since is None:
                self.since = time.time()
            return self.since

    def answered(self) -> None:
        with self._lock:
            self.since = None


def fetch(
    session: requests.Session,
    outage: Outage,
    service: str,
    method: str,
    url: str,
    timeout: float,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """(status, body) of one request that ends within timeout seconds in all."""
    deadline = time.monotonic() + timeout
    # Uncompressed, so the size cap counts what is held in memory (no gzip bomb).
    headers = {"Accept-Encoding": "identity"}
    try:
        response = session.request(
            method, url, timeout=timeout, stream=True, headers=headers, **kwargs
        )
    except requests.RequestException as exc:
        raise UpstreamError(
            N_("{service} unreachable ({error})"),
            outage.failed(),
            service=service,
            error=type(exc).__name__,
        ) from None
    try:
        body = read_capped(response, service, deadline)
    except UpstreamError as exc:
        if "unreachable" in exc.message:
            exc.since = outage.failed()
        raise
    outage.answered()
    return response.status_code, body


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def unusable(service: str) -> UpstreamError:
    return UpstreamError(N_("{service} gave an answer the bot cannot use"), service=service)


def utc_text(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat().replace("+00:00", "Z")
