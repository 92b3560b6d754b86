"""The HTTP server both rigwatch programs serve on: the standard library's request handler behind
one event loop that owns every connection until its request has fully arrived, so slow or idle
clients cost a file descriptor, never a thread, and every limit below holds under a flood."""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from socketserver import _SocketWriter  # type: ignore[attr-defined]

from rigwatch.logs import logger

log = logger("http", "server")

MAX_HEADER_BYTES = 64 * 1024
# Answered, without a thread, to a client arriving while every connection slot is busy with a
# request in progress; idle and half-sent connections are closed to make room instead.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 20\r\n"
    b"Content-Type: text/plain\r\n\r\ntoo many connections"
)


@dataclass(frozen=True)
class Limits:
    """What one server allows. ``request_timeout`` is the whole time from a request's first byte
    (or the connection's opening) to its last body byte; it does not restart with each line.
    ``next_request_wait`` is how long a worker that has just answered on a kept-alive
    connection waits for that client's next request before handing the connection back to the
    loop: a client sending requests back to back (Alertmanager flushing many groups) is then
    served without a hand-over between threads per request. 0 for clients that pause between
    requests (Prometheus scrapes every 15 s or more)."""

    max_connections: int = 512
    workers: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    backlog: int = 1024
    next_request_wait: float = 0.002


class HardenedHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler with the ambiguous requests refused before any method runs."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # A response's status line, headers and body leave in one send when the request is done
    # (handle_one_request flushes): one system call and one wake-up of the client instead of
    # two. Larger bodies are written through; a handler may ask for more (the exporter does).
    wbufsize = 64 * 1024

    def parse_request(self) -> bool:
        words = self.raw_requestline.split()
        if len(words) == 2:
            # HTTP/0.9 ("GET /"): the stdlib would wait for headers such a client never sends.
            self.command, self.path = None, ""
            self.request_version = "HTTP/1.0"
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.close_connection = True
            self.send_error(400, "HTTP/0.9 requests are not served")
            return False
        if not super().parse_request():
            return False
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        ambiguous = None
        if len(lengths) > 1:
            ambiguous = "differing Content-Length headers"
        elif lengths and self.headers.get("Transfer-Encoding") is not None:
            ambiguous = "Transfer-Encoding together with Content-Length"
        if ambiguous:
            # Two readings of where the body ends is how requests are smuggled past proxies.
            self.close_connection = True
            self.send_error(400, ambiguous)
            return False
        return True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)


class _Reader(io.RawIOBase):
    """The socket as the handler's rfile: bytes the loop already read come first, and every
    read is bounded by the request's deadline, not by a per-read timeout."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pending = b""
        self.deadline = 0.0
        self.probe = False  # only hand out what is already here (never touch the socket)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:  # type: ignore[override]
        if self.pending:
            n = min(len(buffer), len(self.pending))
            buffer[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            return n
        if self.probe:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request time limit reached")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _Writer(_SocketWriter):
    """Writes with their own timeout: a client that stops reading is cut off too."""

    def __init__(self, sock: socket.socket, timeout: float):
        super().__init__(sock)
        self.timeout = timeout

    def write(self, b) -> int:  # type: ignore[override]
        self._sock.settimeout(self.timeout)
        return super().write(b)


class _Connection:
    __slots__ = ("sock", "address", "buffer", "deadline", "reader", "rfile", "wfile")

    def __init__(self, sock: socket.socket, address, limits: Limits):
        self.sock = sock
        self.address = address
        self.buffer = b""
        self.deadline = time.monotonic() + limits.request_timeout
        self.reader = _Reader(sock)
        self.rfile = io.BufferedReader(self.reader, 65536)
        self.wfile = _Writer(sock, limits.request_timeout)

    def request_ready(self) -> bool:
        """A full header block is here, or a first line that says it will never come."""
        if b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer:
            return True
        line, newline, _ = self.buffer.partition(b"\n")
        return bool(newline) and len(line.split()) != 3

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class HardenedHTTPServer:
    """Accepts, times out and bounds connections in one loop thread; a pool of ``workers``
    threads runs the handler once a request's headers are in. Idle kept-alive connections
    wait in the loop for ``idle_timeout``; at ``max_connections`` the longest-waiting one
    that has no request in progress is closed to make room."""

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        limits: Limits | None = None,
    ):
        self.limits = limits or Limits()
        self.handler_class = handler_class
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
        self._selector = selectors.DefaultSelector()
        # The connections waiting in the loop (oldest first), the count a worker holds, and the
        # selector's registrations change under this lock: a worker hands a kept-alive
        # connection back itself, registering it while the loop waits in select (epoll allows
        # that), instead of waking the loop to do it.
        self._state = threading.Lock()
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()  # in the loop, oldest first
        self._busy = 0  # connections a worker holds
        self._nodelay = bool(getattr(handler_class, "disable_nagle_algorithm", False))
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
                if full and not self._evict_oldest():
                    refused = True
                else:
                    refused = False
                    sock.setblocking(False)
                    if self._nodelay:
                        # Once per connection: a response's last segment must not wait for
                        # the client's delayed ACK on a kept-alive connection.
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
            # Closing with the request unread would reset the connection, and a reset can
            # discard the answer before the client reads it.
            while sock.recv(65536):
                pass
        sock.close()

    def _evict_oldest(self) -> bool:
        """Close the longest-waiting connection (under _state)."""
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
        if not data:  # the client hung up between requests: nothing to say
            with self._state:
                self._drop(connection)
            return
        if not connection.buffer:
            # The request's clock starts with its first byte (a kept-alive connection).
            connection.deadline = time.monotonic() + self.limits.request_timeout
        connection.buffer += data
        if connection.request_ready() or len(connection.buffer) > MAX_HEADER_BYTES:
            self._dispatch(connection)

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
                if connection.buffer:
                    log.debug("%s: request not complete in time; closing", connection.address)
                self._drop(connection)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _give_back(self, connection: _Connection | None) -> None:
        """A worker is done with a connection (None: it was closed). A kept-alive one goes back
        to waiting in the loop, registered from here; _serve_requests has already served every
        complete request that was in, so what is buffered is at most the start of the next."""
        if connection is not None:
            connection.deadline = time.monotonic() + (
                self.limits.request_timeout if connection.buffer else self.limits.idle_timeout
            )
            try:
                connection.sock.setblocking(False)
            except OSError:
                connection.close()
                connection = None
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
        """Run the handler for every request already here; then hand the connection back."""
        keep = False
        try:
            keep = self._serve_requests(connection)
        except OSError as exc:
            log.debug("%s: connection lost: %s", connection.address, exc)
        except Exception:  # noqa: BLE001 - one bad request must not kill a worker
            log.exception("%s: request handling failed", connection.address)
        if keep:
            self._give_back(connection)
        else:
            connection.close()
            self._give_back(None)

    def _serve_requests(self, connection: _Connection) -> bool:
        sock = connection.sock
        # No setblocking(True) here: the reader and the writer set the socket's timeout
        # before each call.
        reader = connection.reader
        reader.pending, connection.buffer = connection.buffer, b""
        reader.deadline = connection.deadline
        handler = self.handler_class.__new__(self.handler_class)
        handler.request = handler.connection = sock
        handler.client_address = connection.address
        handler.server = self
        handler.rfile = connection.rfile
        handler.wfile = connection.wfile
        if handler.wbufsize > 0:
            # As the stdlib's StreamRequestHandler does: a handler that asks for a write buffer
            # gets its headers and body out in one send (handle_one_request flushes). Made per
            # turn on a worker, so idle connections hold no buffer. The buffer wraps a writer
            # of its own: when it is collected it closes what it wraps, which must not be the
            # connection's writer that the next turn uses.
            writer = _Writer(sock, self.limits.request_timeout)
            handler.wfile = io.BufferedWriter(writer, handler.wbufsize)
        while True:
            handler.close_connection = True
            handler.handle_one_request()
            if handler.close_connection or self._stop.is_set():
                return False
            # Pipelined bytes already read stay with the connection for its next request.
            reader.probe = True
            try:
                leftover = b"".join(iter(lambda: connection.rfile.read1(65536), b""))
            finally:
                reader.probe = False
            leftover, reader.pending = reader.pending + leftover, b""
            connection.buffer = leftover
            if not leftover and not self._next_request(connection):
                return False  # the client hung up
            if not connection.request_ready():
                return True
            reader.pending, connection.buffer = connection.buffer, b""
            reader.deadline = time.monotonic() + self.limits.request_timeout

    def _next_request(self, connection: _Connection) -> bool:
        """Wait up to limits.next_request_wait for the client's next bytes, into
        connection.buffer; False when the client hung up meanwhile. Only a whole header block
        is served here: a client still sending after the wait goes back to the loop."""
        wait = self.limits.next_request_wait
        if wait <= 0 or self._stop.is_set():
            return True
        sock = connection.sock
        try:
            sock.settimeout(wait)
            data = sock.recv(65536)
        except (TimeoutError, InterruptedError, BlockingIOError):
            return True  # nothing yet: the loop waits for it
        except OSError:
            return False
        if not data:
            return False
        connection.buffer = data
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
