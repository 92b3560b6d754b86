"""The exporter's HTTP side under hostile clients: an idle-connection flood past its connection
bound, HTTP/0.9 and ambiguous lengths; and the file limit its systemd unit ships with."""

from __future__ import annotations

import configparser
import socket
import time
import urllib.parse
from pathlib import Path

from tests.support import REPO, http_get, running_exporter


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_an_idle_flood_holds_no_threads_and_scrapes_still_answer(scenario_file):
    """1,024 connections that sent one request line made every scrape time out, and 2,000
    half-sent requests held 2,005 threads, for as long as they stayed open."""
    with running_exporter(scenario_file, "--no-collector.xid") as (proc, base):
        port = urllib.parse.urlsplit(base).port
        assert http_get(base + "/metrics")[0] == 200
        baseline = _threads(proc.pid)
        idle = []
        try:
            for n in range(700):  # past the 512-connection bound
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if n % 2:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                idle.append(sock)
            started = time.monotonic()
            status, _ = http_get(base + "/metrics", timeout=10)
            assert status == 200
            assert time.monotonic() - started < 3
            assert _threads(proc.pid) <= baseline + 16  # at most the worker pool
        finally:
            for sock in idle:
                sock.close()
        started = time.monotonic()
        assert http_get(base + "/metrics")[0] == 200
        assert time.monotonic() - started < 3
        assert "Traceback" not in proc.output()


def test_http_0_9_and_ambiguous_lengths_are_refused_at_once(scenario_file):
    with running_exporter(scenario_file, "--no-collector.xid") as (_, base):
        port = urllib.parse.urlsplit(base).port
        started = time.monotonic()
        assert _raw(port, b"GET /metrics\r\n").startswith(b"HTTP/1.1 400")
        assert time.monotonic() - started < 2
        answer = _raw(
            port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 400")


def test_the_systemd_units_raise_the_file_limit():
    for name in ("rigwatch-exporter.service", "rigwatch-bot.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string((REPO / "deploy" / "systemd" / name).read_text())
        assert int(parser["Service"]["LimitNOFILE"]) >= 4096, name
