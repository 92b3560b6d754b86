"""Hostile HTTP clients shared by the tests and bench/bench_hostile.py: header blocks that never
end, on connections reopened as soon as the server closes them."""

from __future__ import annotations

import socket
import threading

from tests.support import InBackground

# 66 header lines of 1,000 bytes (~66 KB) and never the blank line that ends the block.
HEADER_LINES = 66
HEADER_LINE = b"X-Pad: " + b"a" * 991 + b"\r\n"


class HeaderFlood(InBackground):
    """``connections`` clients, each sending a request line and HEADER_LINES header lines with
    no end, then waiting for the server to close; a closed connection is reopened at once."""

    def __init__(self, port: int, connections: int, request_line: bytes):
        self.port = port
        self.connections = connections
        self.request_line = request_line
        self.opened = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def _client(self) -> None:
        while not self._stopped.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    with self._lock:
                        self.opened += 1
                    sock.sendall(self.request_line + HEADER_LINE * HEADER_LINES)
                    while not self._stopped.is_set():
                        try:
                            if not sock.recv(65536):
                                break
                        except TimeoutError:
                            continue
            except OSError:
                self._stopped.wait(0.01)  # refused or reset: reopen, without spinning

    def run(self) -> None:
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.connections)
        ]
        for thread in self._threads:
            thread.start()
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(5)
