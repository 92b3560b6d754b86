"""The hardened HTTP server both programs use: total request deadline, connection bound, backlog,
quiet hang-ups, HTTP/0.9 and ambiguous body lengths refused (loopback only, bounded in time)."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from rigwatch.httpserver import HardenedHTTPServer, Limits, Request, Response
from tests.support import wait_until

BIG = b"x" * (4 * 1024 * 1024)


class _Echo:
    """GET answers ok (or 4 MiB at /big); POST echoes its body."""

    server_name = "echo"

    def check(self, request: Request) -> Response | None:
        return None

    def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return Response(200, request.body)
        return Response(200, BIG if request.path == "/big" else b"ok\n")


@contextlib.contextmanager
def serving(**limits) -> Iterator[HardenedHTTPServer]:
    server = HardenedHTTPServer(("127.0.0.1", 0), _Echo(), Limits(**limits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)


def connect(server: HardenedHTTPServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(server.server_address, timeout=timeout)


def ask(server: HardenedHTTPServer, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes or goes quiet."""
    with connect(server, timeout) as sock:
        sock.sendall(raw)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in chunks[0]:
                    break
        return b"".join(chunks)


def get_ok(server: HardenedHTTPServer) -> float:
    started = time.monotonic()
    answer = ask(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return time.monotonic() - started


def test_a_slow_header_client_is_cut_off_at_the_total_limit():
    """A header line every 0.2 s used to restart the read timeout each time: never cut off."""
    with serving(request_timeout=1.0) as server, connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        for n in range(40):
            try:
                sock.sendall(f"X-Slow-{n}: y\r\n".encode())
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                if sock.recv(100) == b"":
                    closed = True
                    break
        assert closed
        assert time.monotonic() - started < 2.5


def test_a_slow_body_is_cut_off_at_the_total_limit():
    with serving(request_timeout=1.0) as server, connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(40):
                sock.sendall(b"c")
                time.sleep(0.1)  # a pace, not a wait: the body trickles in over 4 s
        # Cut at the 1 s limit, not at the trickle's end: halfway between the two.
        assert time.monotonic() - started < (1.0 + 4.0) / 2


def test_idle_floods_cost_no_threads_and_real_requests_still_answer():
    """2,000 half-sent requests held 2,005 threads; now the loop holds them, the workers stay
    free, and past the connection bound the oldest idle ones are closed to make room."""
    before = threading.active_count()
    with serving(max_connections=100, workers=4, request_timeout=30) as server:
        idle = []
        try:
            for n in range(300):
                sock = connect(server)
                if n % 2:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
                idle.append(sock)
            assert get_ok(server) < 1.0
            assert threading.active_count() <= before + 1 + 4
            assert server.connection_count() <= 100
        finally:
            for sock in idle:
                sock.close()
        # After they close, the server is as it was: answers at once, nothing left open.
        assert get_ok(server) < 1.0
        wait_until(lambda: server.connection_count() <= 1, timeout=10, what="the idle ones gone")


def test_half_sent_requests_at_the_cap_make_room_for_a_newcomer():
    """Requests still arriving wait in the loop, not on a worker: at the cap the oldest is
    closed for a newcomer, so the cap never locks a well-behaved client out."""
    with serving(max_connections=2, workers=2, request_timeout=5) as server:
        slow = [connect(server) for _ in range(2)]
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert wait_until(lambda: server.connection_count() == 2, timeout=5)
        try:
            started = time.monotonic()
            assert get_ok(server) < 1.0
            assert time.monotonic() - started < 1.0
            assert slow[0].recv(100) == b""  # the oldest was closed to make room
        finally:
            for sock in slow:
                sock.close()


def test_every_worker_busy_and_no_room_is_a_quick_503():
    release = threading.Event()

    class _Stuck(_Echo):
        def handle(self, request: Request) -> Response:
            release.wait(10)
            return super().handle(request)

    server = HardenedHTTPServer(("127.0.0.1", 0), _Stuck(), Limits(max_connections=2, workers=2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    held = [connect(server) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # both workers held
        assert wait_until(lambda: server._busy == 2, timeout=5)
        started = time.monotonic()
        answer = ask(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503")
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        for sock in held:
            sock.close()
        server.close()
        thread.join(5)


def test_listen_backlog_is_well_above_five():
    with serving() as server:
        port = server.server_address[1]
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(out[2]) >= 1000  # Send-Q of a listening socket is its backlog


def test_a_client_that_hangs_up_is_one_debug_line_at_most(caplog):
    with serving() as server, caplog.at_level(logging.DEBUG, logger="rigwatch"):
        for _ in range(5):
            sock = connect(server)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.close()  # reset while the 4 MB answer is being written
        sock = connect(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.close()  # half a request
        wait_until(lambda: server.connection_count() == 0, timeout=10, what="all of them closed")
        assert get_ok(server) < 1.0
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud == []
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)
    assert len(caplog.records) <= 6 * 2  # each hang-up: at most its debug line (+ access line)


def test_http_0_9_is_refused_at_once():
    with serving(request_timeout=30) as server:
        started = time.monotonic()
        answer = ask(server, b"GET /\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 3\r\nContent-Length: 5\r\n",
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
)
def test_ambiguous_body_length_is_400(headers):
    with serving() as server:
        answer = ask(server, b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabcde")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]


def test_repeated_identical_content_length_and_pipelining_still_work():
    with serving() as server, connect(server) as sock:
        two = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
        sock.sendall(two + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"ok\n"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        assert data.index(b"abc") < data.index(b"ok\n")


def test_a_handler_answers_every_request_on_a_kept_alive_connection():
    """The server keeps answering on the same connection turn after turn, as Prometheus and
    vmagent scrape."""
    server = HardenedHTTPServer(("127.0.0.1", 0), _Echo(), Limits())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(server) as sock:
            for _ in range(4):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"ok\n"):
                    chunk = sock.recv(65536)
                    assert chunk, "the server closed a kept-alive connection"
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data[:100]
                gc.collect()  # as in a long-running server, between turns
                time.sleep(0.05)  # a pace, not a wait: turns spread out as a client's are
    finally:
        server.close()
        thread.join(5)


def _answer(sock: socket.socket, body: bytes = b"ok\n") -> bytes:
    data = b""
    while not (data.startswith(b"HTTP/1.1") and data.endswith(body)):
        chunk = sock.recv(65536)
        assert chunk, "the server closed a kept-alive connection"
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return data


NEXT_REQUEST_WAIT_S = 0.3


def test_a_worker_waiting_for_the_next_request_serves_it_or_hands_the_connection_back():
    """After an answer the worker waits next_request_wait for the same client's next request:
    one sent at once is served; one still arriving when the wait ends goes back to the loop
    and is answered all the same; a client that hangs up meanwhile is closed quietly."""
    with serving(next_request_wait=NEXT_REQUEST_WAIT_S, workers=2) as server:
        with connect(server) as sock:
            for _ in range(3):  # back to back
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                _answer(sock)
            # Half the headers inside the wait, the rest after it: the loop finishes the read.
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            time.sleep(2 * NEXT_REQUEST_WAIT_S)  # a pause the case needs: past the wait
            sock.sendall(b"Content-Length: 4\r\n\r\nbody")
            _answer(sock, b"body")
            # Nothing within the wait: the connection waits in the loop, still served later.
            time.sleep(2 * NEXT_REQUEST_WAIT_S)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _answer(sock)
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _answer(sock)
        # Hung up while the worker waited: nothing stays open.
        wait_until(lambda: server.connection_count() == 0, timeout=10, what="nothing open")


def test_a_body_past_the_limit_is_413_even_in_one_byte_chunks():
    """The loop keeps a running total of a body's bytes: a chunked body of many one-byte
    chunks is refused at the limit, not summed chunk by chunk."""
    with serving(max_body_bytes=1000) as server:
        chunks = b"1\r\na\r\n" * 2000 + b"0\r\n\r\n"
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = ask(server, head + chunks)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        small = b"1\r\na\r\n" * 10 + b"0\r\n\r\n"
        answer = ask(server, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + small)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"a" * 10), answer[:200]
