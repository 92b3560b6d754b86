"""Both servers' HTTP framing on loopback: header blocks that never end hold no worker, a body
on GET or HEAD is never served as a request, RFC 9112's strict parsing, the bot's bearer token
before 100 Continue, and a differential test that sends a corpus of odd requests to each
server and checks the requests it answers against h11's reading of the same bytes."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator

import h11
import pytest

from tests.alert_bot import botkit
from tests.alert_bot.botkit import WEBHOOK_TOKEN
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.hostile_http import HEADER_LINE, HEADER_LINES, HeaderFlood
from tests.support import running_exporter

AUTH = f"Authorization: Bearer {WEBHOOK_TOKEN}\r\n".encode()
TE = b"Transfer-Encoding: chunked\r\n"
CL3 = b"Content-Length: 3\r\n"


class Server:
    def __init__(self, kind: str, port: int):
        self.kind = kind
        self.port = port

    def status_for(self, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> tuple:
        """(the status this server answers a well-framed request with, whether it closes)."""
        path = target.split(b"?", 1)[0]
        if method in (b"GET", b"HEAD"):
            return (200 if path in (b"/", b"/healthz", b"/metrics") else 404), False
        if self.kind == "exporter":
            return 405, True
        if method != b"POST":
            return 405, True
        if path != b"/alertmanager":
            return 404, True
        if headers.get(b"authorization") != f"Bearer {WEBHOOK_TOKEN}".encode():
            return 401, True
        if b"content-length" not in headers:
            return 411, True
        return 400, False  # every body in the corpus is not a notification


@pytest.fixture(scope="module", params=["exporter", "bot"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    if request.param == "exporter":
        args = ("--no-collector.gpu", "--no-collector.gpu_process", "--no-collector.xid")
        with running_exporter(None, *args) as (_, base):
            yield Server("exporter", urllib.parse.urlsplit(base).port)
        return
    telegram = FakeTelegram(botkit.BOT_TOKEN).start()
    try:
        env = botkit.bot_env(tmp_path_factory.mktemp("bot"), telegram.url)
        with botkit.running_bot(env, run_updates=False) as (app, _):
            yield Server("bot", app.port)
    finally:
        telegram.stop()


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
        return out


def statuses(data: bytes, methods: list[bytes]) -> list[int]:
    """The status codes of the responses in data, in order (1xx skipped)."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")
    found: list[int] = []
    pending = list(methods) or [b"GET"]
    while True:
        # h11 frames a response by the request it answers (HEAD has no body).
        method = pending[0] if pending else b"GET"
        client = _client_after(client, method)
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:
            return found
        if isinstance(event, h11.Response):
            found.append(event.status_code)
            if pending:
                pending.pop(0)
        elif event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            return found
        if client.their_state is h11.DONE and client.our_state is h11.DONE:
            client.start_next_cycle()


def _client_after(client: h11.Connection, method: bytes) -> h11.Connection:
    if client.our_state is h11.IDLE:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
    return client


def _line_refused(pending: bytes) -> bool:
    """Whether h11 refuses the request line alone (rigwatch answers that before the headers)."""
    line, newline, _ = bytes(pending).partition(b"\n")
    if not newline:
        return False
    probe = h11.Connection(h11.SERVER)
    probe.receive_data(line.rstrip(b"\r") + b"\r\nHost: x\r\n\r\n")
    try:
        probe.next_event()
    except h11.RemoteProtocolError:
        return True
    return False


def reference(server: Server, raw: bytes) -> tuple[list[int], bool, list[bytes]]:
    """h11's reading of raw as a server: the status of each request it frames, whether the
    bytes end in a refusal, and the methods (for reading the answers)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    expected: list[int] = []
    methods: list[bytes] = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return expected, True, methods
        if event is h11.NEED_DATA and _line_refused(conn.trailing_data[0]):
            return expected, True, methods  # a request line h11 refuses, refused at once
        if not isinstance(event, h11.Request):
            return expected, False, methods  # incomplete: nothing more is answered
        headers = dict(event.headers)
        if b"transfer-encoding" in headers and b"content-length" in headers:
            return expected, True, methods  # refused by rigwatch's policy (RFC 9112 6.3)
        status, closes = server.status_for(event.method, event.target, headers)
        if status in (401, 404, 405, 411) and event.method == b"POST":
            expected.append(status)  # answered before the body, then closed
            methods.append(event.method)
            return expected, False, methods
        while True:
            try:
                part = conn.next_event()
            except h11.RemoteProtocolError:
                return expected, True, methods
            if part is h11.NEED_DATA:
                return expected, False, methods
            if isinstance(part, h11.EndOfMessage):
                break
        expected.append(status)
        methods.append(event.method)
        conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        if closes or conn.our_state is not h11.DONE:
            return expected, False, methods
        conn.start_next_cycle()


def _get(path: str = "/healthz", extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + path.encode() + b" " + version + b"\r\nHost: x\r\n" + extra + b"\r\n"


def _post(body: bytes, extra: bytes = b"", path: bytes = b"/alertmanager") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + AUTH + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )  # fmt: skip


SMUGGLED = _get("/metrics")  # 34 bytes
CORPUS: dict[str, bytes] = {
    "plain": _get(),
    "two pipelined": _get() + _get("/"),
    "GET with a Content-Length body that is a request": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED + _get("/nope")
    ),
    "GET with a chunked body that is a request": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n" + _get("/nope")
    ),
    "HEAD with a body": (
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + _get("/nope")
    ),
    "space before the colon of Transfer-Encoding": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + _get("/nope")
    ),
    "CL then TE": _get(extra=b"Content-Length: 5\r\n" + TE) + b"0\r\n\r\n",
    "TE then CL": _get(extra=TE + b"Content-Length: 5\r\n") + b"0\r\n\r\n",
    "two differing Content-Length": _get(extra=CL3 + b"Content-Length: 5\r\n") + b"abcde",
    "two equal Content-Length": _get(extra=CL3 + CL3) + b"abc" + _get("/"),
    "Content-Length list": _get(extra=b"Content-Length: 3, 3\r\n") + b"abc" + _get("/"),
    "Content-Length +5": _get(extra=b"Content-Length: +5\r\n") + b"hello",
    "Content-Length 0_5": _get(extra=b"Content-Length: 0_5\r\n") + b"hello",
    "Content-Length -1": _get(extra=b"Content-Length: -1\r\n"),
    "Content-Length hex": _get(extra=b"Content-Length: 0x5\r\n") + b"hello",
    "Content-Length huge": _get(extra=b"Content-Length: 99999999999999999999\r\n"),
    "TE gzip, chunked": _get(extra=b"Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n",
    "TE chunked, identity": _get(extra=b"Transfer-Encoding: chunked, identity\r\n") + b"0\r\n\r\n",
    "TE xchunked": _get(extra=b"Transfer-Encoding: xchunked\r\n") + b"0\r\n\r\n",
    "TE with a tab": _get(extra=b"Transfer-Encoding:\tchunked\r\n") + b"0\r\n\r\n" + _get("/"),
    "TE twice": _get(extra=TE + TE) + b"0\r\n\r\n",
    "chunk extension": _get(extra=TE) + b"3;ext=1\r\nabc\r\n0\r\n\r\n" + _get("/"),
    "chunk size with junk": _get(extra=TE) + b"3x\r\nabc\r\n0\r\n\r\n",
    "chunk with trailer": _get(extra=TE) + b"0\r\nX-T: 1\r\n\r\n" + _get("/"),
    "chunk size over-long": _get(extra=TE) + b"f" * 40 + b"\r\n",
    "NUL in a header name": _get(extra=b"X-A\x00b: 1\r\n"),
    "NUL in a header value": _get(extra=b"X-A: b\x00c\r\n"),
    "no Host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "two Host": _get(extra=b"Host: y\r\n"),
    "HTTP/01.1": b"GET /healthz HTTP/01.1\r\nHost: x\r\n\r\n",
    "HTTP/2.0": b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
    "tab in the request line": b"GET\t/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "two spaces in the request line": b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line without a colon": _get(extra=b"X-No-Colon\r\n"),
    "one-word request line": b"GARBAGE\r\n\r\n",
    "HTTP/0.9": b"GET /healthz\r\n",
    "obs-fold": _get(extra=b"X-A: one\r\n two\r\n") + _get("/"),
    "bare LF": b"GET /healthz HTTP/1.1\nHost: x\n\n" + _get("/"),
    "space before a header name": b"GET /healthz HTTP/1.1\r\n Host: x\r\n\r\n",
    "over-long header line": _get(extra=b"X-Long: " + b"a" * 40_000 + b"\r\n"),
    "over-long request target": _get("/" + "a" * 40_000),
    "HTTP/1.0 then more": _get(version=b"HTTP/1.0") + _get("/nope"),
    "Connection: close then more": _get(extra=b"Connection: close\r\n") + _get("/nope"),
    "leading empty line": b"\r\n" + _get(),
    "absolute target": b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "lower-case method": b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST pipelined with a body": _post(b"{}") + _get("/") + _post(b"[]"),
    "POST chunked": (
        b"POST /alertmanager HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + _get()
    ),
    "POST without a token": _post(b"{}").replace(AUTH, b""),
    "PUT": b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + _get(),
}  # fmt: skip


def test_the_corpus_is_at_least_forty_requests():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_server_frames_odd_requests_as_h11_does(server, name):
    raw = CORPUS[name]
    expected, refused, methods = reference(server, raw)
    answer = exchange(server.port, raw)
    got = statuses(answer, methods + ([b"GET"] if refused else []))
    assert got[: len(expected)] == expected, (name, answer[:300])
    if refused:
        assert len(got) == len(expected) + 1, (name, answer[:300])
        assert 400 <= got[-1] < 500 or got[-1] == 501, (name, answer[:300])
        assert got[-1] not in (404, 405), (name, answer[:300])
    else:
        assert len(got) == len(expected), (name, answer[:300])


def test_a_body_on_get_is_never_a_second_request(server):
    for name in ("GET with a Content-Length body that is a request", "HEAD with a body"):
        answer = exchange(server.port, CORPUS[name])
        assert answer.count(b"HTTP/1.1 200") == 1, answer[:300]
        assert b"HTTP/1.1 404" in answer  # the request after the body, framed as h11 does
    answer = exchange(server.port, CORPUS["GET with a chunked body that is a request"])
    assert answer.count(b"HTTP/1.1 200") == 1 and b"# HELP" not in answer


@pytest.mark.parametrize(
    "name",
    [
        "space before the colon of Transfer-Encoding",
        "Content-Length +5",
        "Content-Length 0_5",
        "NUL in a header name",
        "NUL in a header value",
        "no Host",
        "two Host",
        "HTTP/01.1",
        "tab in the request line",
        "header line without a colon",
        "one-word request line",
    ],
)
def test_strict_parsing_refuses_with_a_status_line(server, name):
    started = time.monotonic()
    answer = exchange(server.port, CORPUS[name])
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert b"200 OK" not in answer
    assert time.monotonic() - started < 3  # refused at once, not at the request deadline


def _well_behaved(server: Server, n: int) -> bytes:
    """A scrape, or an authenticated webhook with a new notification."""
    if server.kind == "exporter":
        return _get("/metrics", b"Connection: close\r\n")
    alert = botkit.alert(rig=f"flood-{n}-{time.monotonic_ns()}")
    body = json.dumps(botkit.notification(alert, group_key=f"flood-{n}-{time.monotonic_ns()}"))
    return _post(body.encode(), b"Connection: close\r\n")


@pytest.mark.parametrize("floods", [16, 64])
def test_never_ending_header_blocks_hold_no_worker(server, floods):
    """66 header lines of 1,000 bytes and no blank line, on connections reopened when closed:
    a worker was held until the request deadline, scrapes took 9.5 s and the cap answered 503
    to well-behaved clients. Each block is refused as soon as it passes the header limit."""
    line = b"GET /metrics HTTP/1.1\r\n"
    if server.kind == "bot":
        line = b"POST /alertmanager HTTP/1.1\r\n"
    with HeaderFlood(server.port, floods, line) as flood:
        for n in range(20):
            started = time.monotonic()
            answer = exchange(server.port, _well_behaved(server, n), 10)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert time.monotonic() - started < 3  # was 9.5 s and more, or a 503
        assert flood.opened > floods  # the server closed the blocks and they came back
    started = time.monotonic()
    blocked = exchange(server.port, line + HEADER_LINE * HEADER_LINES)
    assert blocked.startswith(b"HTTP/1.1 431 "), blocked[:200]
    assert time.monotonic() - started < 3  # refused at once, not at the request deadline


def test_100_continue_only_after_the_request_is_accepted(server):
    """The bot sent 100 Continue before it checked the bearer token; a refused request now
    gets its refusal and no 100 (the exporter refuses every method with a body)."""
    head = b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    head += b"Content-Length: 2\r\n"
    refused = b"HTTP/1.1 401" if server.kind == "bot" else b"HTTP/1.1 405"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + b"Authorization: Bearer wrong\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(refused), first[:200]
        assert b"100 Continue" not in first
    if server.kind == "exporter":
        return
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + AUTH + b"\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 "), first[:200]
        sock.sendall(b"{}")
        second = sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 400"), second[:200]  # {} is not a notification
