"""The HTTP server both rigwatch programs serve on: h11 (python-hyper's strict HTTP/1.1 state
machine) parses and frames every request and response; one event loop of ours owns each
connection until its whole request (headers and body) has arrived, so slow, idle or hostile
clients cost a file descriptor, never a thread, and a pool of workers only ever sees complete
requests. The loop keeps rigwatch's resource policy: a total deadline per request, an idle
allowance between requests, a connection cap at which the longest-waiting connection is
closed to make room, and a header block that never ends is refused as soon as it passes
MAX_HEADER_BYTES."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import h11

from rigwatch.logs import logger

log = logger("http", "server")

# A scrape or webhook request's header block is a few hundred bytes; nginx allows 4 x 8 KiB.
MAX_HEADER_BYTES = 32 * 1024
# Answered, without a thread, to a client arriving while every connection slot is busy with a
# request on a worker; idle and half-sent connections are closed to make room instead.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 20\r\n"
    b"Content-Type: text/plain\r\n\r\ntoo many connections"
)
# After an error answer the loop reads and discards what the client still sends, this long at
# most, before closing: closing with unread bytes would reset the connection, and a reset can
# discard the answer before the client reads it.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """What one server allows. ``request_timeout`` is the whole time from a request's first byte
    (or the connection's opening) to its last body byte; it does not restart with each line.
    ``next_request_wait`` is how long a worker that has just answered on a kept-alive
    connection waits for that client's next request before handing the connection back to the
    loop: a client sending requests back to back (Alertmanager flushing many groups) is then
    served without a hand-over between threads per request. 0 for clients that pause between
    requests (Prometheus scrapes every 15 s or more). ``max_body_bytes`` bounds what the loop
    buffers for one request."""

    max_connections: int = 512
    workers: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    backlog: int = 1024
    next_request_wait: float = 0.002
    max_body_bytes: int = 1024 * 1024


@dataclass
class Request:
    """One complete request, as h11 framed it."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    client: tuple
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The named header's value (h11 lower-cases names); several are joined with ", "."""
        key = name.lower().encode()
        values = [v.decode("latin-1") for k, v in self.headers if k == key]
        return ", ".join(values) if values else None


@dataclass
class Response:
    """What a handler answers; Content-Length is set from the body."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


class Handler(Protocol):
    """What a server serves. ``check`` runs in the loop as soon as a request's headers are in,
    before any ``100 Continue`` and before the body is read: an answer from it is sent and the
    connection closed. ``handle`` runs on a worker with the whole request."""

    server_name: str

    def check(self, request: Request) -> Response | None: ...

    def handle(self, request: Request) -> Response: ...


def _status_for(exc: h11.RemoteProtocolError) -> int:
    return exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400


class _Connection:
    __slots__ = (
        "sock",
        "address",
        "http",
        "deadline",
        "request",
        "body",
        "lingering",
        "line_checked",
        "body_size",
    )

    def __init__(self, sock: socket.socket, address, limits: Limits):
        self.sock = sock
        self.address = address
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.deadline = time.monotonic() + limits.request_timeout
        self.request: Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.lingering = False
        self.line_checked = False  # the pending request line passed _bad_request_line

    def in_progress(self) -> bool:
        """Part of a request is here (h11 holds unparsed bytes or a request has begun)."""
        return self.request is not None or bool(self.http.trailing_data[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


_READY, _WAIT, _CLOSE, _LINGER = "ready", "wait", "close", "linger"


class HardenedHTTPServer:
    """Accepts, times out and bounds connections in one loop thread; a pool of ``workers``
    threads runs the handler once a whole request is in. Idle kept-alive connections wait in
    the loop for ``idle_timeout``; at ``max_connections`` the longest-waiting one that has no
    request on a worker is closed to make room."""

    def __init__(self, address: tuple[str, int], handler: Handler, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.handler = handler
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(self.limits.backlog)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()[:2]
        self._server_header = handler.server_name.encode()
        self._selector = selectors.DefaultSelector()
        # The connections waiting in the loop (oldest first), the count a worker holds, and the
        # selector's registrations change under this lock: a worker hands a kept-alive
        # connection back itself, registering it while the loop waits in select (epoll allows
        # that), instead of waking the loop to do it.
        self._state = threading.Lock()
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._busy = 0  # connections a worker holds
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http-worker")
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    # --- the loop ---------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        selector = self._selector
        selector.register(self.socket, selectors.EVENT_READ, "listen")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(min(poll_interval, 0.25)):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._readable(key.data)
                self._expire()
        finally:
            with self._state:
                for connection in list(self._waiting):
                    self._drop(connection)
                selector.close()
            self._stopped.set()

    def _accept(self) -> None:
        for _ in range(128):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: shed idle connections, keep serving
                log.warning("accept failed: %s", exc)
                with self._state:
                    evicted = self._evict_oldest()
                if not evicted:
                    time.sleep(0.05)  # out of descriptors with none to shed: do not spin
                return
            with self._state:
                full = len(self._waiting) + self._busy >= self.limits.max_connections
                refused = full and not self._evict_oldest()
                if not refused:
                    sock.setblocking(False)
                    # A response's last segment must not wait for the client's delayed ACK on
                    # a kept-alive connection.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                    self._watch(_Connection(sock, address, self.limits))
            if refused:
                self._refuse(sock)

    def _refuse(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(BUSY_RESPONSE)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        sock.close()

    def _evict_oldest(self) -> bool:
        """Close the longest-waiting connection (under _state): idle, half-sent or lingering,
        never one a worker holds, so the cap never locks well-behaved clients out."""
        if not self._waiting:
            return False
        connection = next(iter(self._waiting))
        log.debug("closing %s to make room for a new connection", connection.address)
        self._drop(connection)
        return True

    def _watch(self, connection: _Connection) -> None:
        """Wait in the loop for the connection's next bytes (under _state)."""
        self._waiting[connection] = None
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _drop(self, connection: _Connection) -> None:
        """Close a connection the loop holds (under _state)."""
        if self._waiting.pop(connection, 0) is None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.sock)
        connection.close()

    def _readable(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%s: connection lost: %s", connection.address, exc)
            with self._state:
                self._drop(connection)
            return
        if not data or connection.lingering:
            if not data:
                with self._state:
                    self._drop(connection)
            return
        if not connection.in_progress():
            # The request's clock starts with its first byte (a kept-alive connection).
            connection.deadline = time.monotonic() + self.limits.request_timeout
        connection.http.receive_data(data)
        outcome = self._advance(connection)
        if outcome == _READY:
            self._dispatch(connection)
        elif outcome == _CLOSE:
            with self._state:
                self._drop(connection)
        elif outcome == _LINGER:
            self._linger(connection)

    def _advance(self, connection: _Connection) -> str:
        """Feed h11's events into the request being assembled: _READY once a whole request is
        here, _WAIT for more bytes, _LINGER after an error answer, _CLOSE when the client left.
        Runs in the loop, or on a worker for bytes that came with the previous request."""
        http = connection.http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                status = _status_for(exc)
                log.debug("%s: refused (%d): %s", connection.address, status, exc)
                self._send_quick(connection, Response(status, f"bad request: {exc}\n".encode()))
                return _LINGER
            if event is h11.NEED_DATA:
                if connection.request is None and self._bad_request_line(connection):
                    return _LINGER
                return _WAIT
            if event is h11.PAUSED:
                return _READY if connection.request is not None else _WAIT
            if isinstance(event, h11.Request):
                connection.line_checked = False
                names = {name for name, _ in event.headers}
                if b"transfer-encoding" in names and b"content-length" in names:
                    # RFC 9112 6.3 lets a server refuse this; two readings of where the body
                    # ends is how requests are smuggled past proxies.
                    answer = Response(400, b"Transfer-Encoding together with Content-Length\n")
                    self._send_quick(connection, answer)
                    return _LINGER
                request = Request(
                    event.method.decode("ascii"),
                    event.target.decode("latin-1"),
                    list(event.headers),
                    connection.address,
                )
                try:
                    answer = self.handler.check(request)
                except Exception:  # noqa: BLE001 - one bad request must not stop the loop
                    log.exception("%s: request check failed", connection.address)
                    answer = Response(500, b"internal error\n")
                if answer is not None:
                    self._send_quick(connection, answer)
                    return _LINGER
                connection.request, connection.body, connection.body_size = request, [], 0
                if http.they_are_waiting_for_100_continue:
                    self._send_quick(connection, None)
            elif isinstance(event, h11.Data):
                connection.body.append(bytes(event.data))
                # A running total: a chunked body of one-byte chunks is many events.
                connection.body_size += len(event.data)
                if connection.body_size > self.limits.max_body_bytes:
                    answer = Response(413, b"body too large\n")
                    self._send_quick(connection, answer)
                    return _LINGER
            elif isinstance(event, h11.EndOfMessage):
                return _READY
            elif isinstance(event, h11.ConnectionClosed):
                return _CLOSE

    def _bad_request_line(self, connection: _Connection) -> bool:
        """h11 reads a whole header block before it judges the request line; a line that can
        never start a request (HTTP/0.9's "GET /", one word) is refused as soon as it is in,
        by h11 itself on the line alone, instead of waiting for headers that never come."""
        if connection.line_checked:
            return False
        pending = connection.http.trailing_data[0]
        line, newline, _ = bytes(pending[:8192]).partition(b"\n")
        if not newline:
            return False
        connection.line_checked = True
        probe = h11.Connection(h11.SERVER)
        probe.receive_data(line.rstrip(b"\r") + b"\r\nHost: x\r\n\r\n")
        try:
            probe.next_event()
        except h11.RemoteProtocolError as exc:
            self._send_quick(connection, Response(400, f"bad request line: {exc}\n".encode()))
            return True
        return False

    def _send_quick(self, connection: _Connection, response: Response | None) -> None:
        """A short answer from the loop (None: 100 Continue); a socket that cannot take it at
        once is a client that does not read, and it is closed soon after anyway."""
        http = connection.http
        try:
            if response is None:
                data = http.send(h11.InformationalResponse(status_code=100, headers=[]))
            else:
                if http.our_state is not h11.IDLE and http.our_state is not h11.SEND_RESPONSE:
                    return
                if http.our_state is h11.IDLE and http.their_state is not h11.SEND_BODY:
                    # h11 has not seen a request: answer on a fresh state machine.
                    http = h11.Connection(h11.SERVER)
                    http.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    http.next_event()
                response.close = True
                data = self._serialize(http, response, "GET")
        except h11.LocalProtocolError as exc:
            log.debug("%s: cannot answer: %s", connection.address, exc)
            return
        with contextlib.suppress(OSError):
            connection.sock.send(data)

    def _serialize(self, http: h11.Connection, response: Response, method: str) -> bytes:
        headers = [
            (b"Server", self._server_header),
            (b"Content-Type", response.content_type.encode()),
            (b"Content-Length", str(len(response.body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in response.headers.items()]
        if response.close:
            headers.append((b"Connection", b"close"))
        reason = HTTPStatus(response.status).phrase.encode()
        data = http.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if method != "HEAD" and response.body:
            data += http.send(h11.Data(data=response.body))
        return data + http.send(h11.EndOfMessage())

    def _linger(self, connection: _Connection) -> None:
        """Half-close after an error answer and discard what the client still sends."""
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_WR)
        connection.lingering = True
        connection.deadline = time.monotonic() + LINGER_SECONDS

    def _dispatch(self, connection: _Connection) -> None:
        with self._state:
            self._waiting.pop(connection, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.sock)
            self._busy += 1
        try:
            self._pool.submit(self._serve, connection)
        except RuntimeError:  # the pool is shut down: the server is stopping
            with self._state:
                self._busy -= 1
            connection.close()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._state:
            for connection in [c for c in self._waiting if c.deadline <= now]:
                if connection.in_progress() and not connection.lingering:
                    log.debug("%s: request not complete in time; closing", connection.address)
                self._drop(connection)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _give_back(self, connection: _Connection | None, linger: bool = False) -> None:
        """A worker is done with a connection (None: it was closed). A kept-alive one goes back
        to waiting in the loop, registered from here."""
        if connection is not None:
            connection.deadline = time.monotonic() + (
                self.limits.request_timeout
                if connection.in_progress()
                else self.limits.idle_timeout
            )
            try:
                connection.sock.setblocking(False)
            except OSError:
                connection.close()
                connection = None
            if connection is not None and linger:
                self._linger(connection)
        with self._state:
            self._busy -= 1
            if connection is None:
                return
            if self._stop.is_set():
                connection.close()
                return
            try:
                self._watch(connection)
            except (KeyError, ValueError, OSError):  # the loop has closed its selector
                self._waiting.pop(connection, None)
                connection.close()

    # --- a worker ---------------------------------------------------------------------------

    def _serve(self, connection: _Connection) -> None:
        """Answer the request, and every complete one that came with it; hand the rest back."""
        outcome = _CLOSE
        try:
            outcome = self._serve_requests(connection)
        except OSError as exc:
            log.debug("%s: connection lost: %s", connection.address, exc)
        except Exception:  # noqa: BLE001 - one bad request must not kill a worker
            log.exception("%s: request handling failed", connection.address)
        if outcome in (_WAIT, _LINGER):
            self._give_back(connection, linger=outcome == _LINGER)
        else:
            connection.close()
            self._give_back(None)

    def _serve_requests(self, connection: _Connection) -> str:
        http = connection.http
        while True:
            request = connection.request
            assert request is not None
            request.body = b"".join(connection.body)
            connection.request, connection.body = None, []
            try:
                response = self.handler.handle(request)
            except Exception:  # noqa: BLE001 - an answer, never a dropped connection
                log.exception("%s: %s %s failed", connection.address, request.method, request.path)
                response = Response(500, b"internal error\n", close=True)
            data = self._serialize(http, response, request.method)
            connection.sock.settimeout(self.limits.request_timeout)
            connection.sock.sendall(data)
            log.debug(
                "%s %s %s %d", connection.address, request.method, request.target, response.status
            )
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return _CLOSE
            if self._stop.is_set():
                return _CLOSE
            http.start_next_cycle()
            if not http.trailing_data[0] and not self._next_request(connection):
                return _CLOSE
            if http.trailing_data[0]:
                connection.deadline = time.monotonic() + self.limits.request_timeout
            outcome = self._advance(connection)
            if outcome != _READY:
                return outcome

    def _next_request(self, connection: _Connection) -> bool:
        """Wait up to limits.next_request_wait for the client's next bytes; False when the
        client hung up meanwhile."""
        wait = self.limits.next_request_wait
        if wait <= 0 or self._stop.is_set():
            return True
        try:
            connection.sock.settimeout(wait)
            data = connection.sock.recv(65536)
        except (TimeoutError, InterruptedError, BlockingIOError):
            return True  # nothing yet: the loop waits for it
        except OSError:
            return False
        if not data:
            return False
        connection.http.receive_data(data)
        return True

    # --- lifecycle --------------------------------------------------------------------------

    def connection_count(self) -> int:
        """Open connections, waiting or being served (read from the loop's bookkeeping)."""
        with self._state:
            return len(self._waiting) + self._busy

    def shutdown(self) -> None:
        """Stop the loop and wait for it (like socketserver's shutdown())."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    def close(self) -> None:
        """shutdown() then server_close(): stop serving and release the socket."""
        self.shutdown()
        self.server_close()
