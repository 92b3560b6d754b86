"""Shared helpers for rigwatch's tests: free ports, managed child processes, fake NVML scenarios."""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
FAKE_NVML_DIR = REPO / "tests" / "fake_nvml"


# Ports handed to servers under test come from below the kernel's ephemeral range (32768 and
# up), so no outgoing connection can take one between this check and the server's bind, and
# each pytest-xdist worker draws from its own slice, so two workers never pick the same port.
PORT_BASE = 20000
PORTS_PER_WORKER = 1500
_next_port: list[int] = []


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...; unset when serial
    digits = worker.removeprefix("gw")
    return int(digits) % 8 if digits.isdigit() else 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this worker's slice."""
    first = PORT_BASE + _worker_index() * PORTS_PER_WORKER
    if not _next_port:
        _next_port.append(random.randrange(PORTS_PER_WORKER))
    for _ in range(PORTS_PER_WORKER):
        port = first + _next_port[0] % PORTS_PER_WORKER
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}..{first + PORTS_PER_WORKER - 1}")


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, str]:
    """GET a URL; returns (status, body) for any HTTP status, raises on connection errors."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll predicate() until it returns a truthy value; that value is returned."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the predicate may fail while starting up
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    wait_until(lambda: http_get(url, timeout=2)[0] == 200, timeout=timeout, what=url)


def inherited_environment() -> dict[str, str]:
    """The test runner's environment less its RIGWATCH_* variables (CI's RIGWATCH_REQUIRE_ENGINE,
    RIGWATCH_UPDATE_GOLDEN, ...): the exporter warns about every RIGWATCH_* name that is not one
    of its flags, and a program under test takes its settings from the test alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RIGWATCH_")}


Background = TypeVar("Background", bound="InBackground")


class InBackground:
    """A context whose run() goes on in a daemon thread from entering it until leaving, when
    stop() ends it and the thread is joined."""

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: Background) -> Background:
        self._background = threading.Thread(target=self.run, daemon=True)
        self._background.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._background.join()


class ManagedProcess:
    """A child process whose output goes to a log file and which is always stopped by its pid."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path | None = None):
        self.args = args
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="rigwatch-test-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**inherited_environment(), **(env or {})},
            cwd=cwd or REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, for crash tests; stop() still cleans up afterwards."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


# --- simulated NVML scenarios -------------------------------------------------------------

_BASE_DEVICE = {
    "name": "NVIDIA GeForce RTX 4090",
    "temperature_c": 45,
    "temperature_slowdown_c": 90,
    "temperature_shutdown_c": 95,
    "memory_temperature_c": None,
    "fan_speeds_percent": [30],
    "power_mw": 120000,
    "power_limit_mw": 450000,
    "energy_mj": 1000000,
    "utilization_gpu_percent": 10,
    "utilization_memory_percent": 5,
    "encoder_percent": 0,
    "decoder_percent": 0,
    "memory_total_bytes": 25757220864,
    "memory_used_bytes": 1073741824,
    "clocks_mhz": {"graphics": 210, "sm": 210, "memory": 405, "video": 555},
    "max_clocks_mhz": {"graphics": 3105, "sm": 3105, "memory": 10501, "video": 2415},
    "pstate": 8,
    "clock_event_reasons": 1,
    "pcie": {
        "gen": 4,
        "max_gen": 4,
        "width": 16,
        "max_width": 16,
        "replay_counter": 0,
        "tx_kbps": 1000,
        "rx_kbps": 2000,
    },
    "ecc": None,
    "remapped_rows": None,
    "processes": [],
    "xid_events": [],
    "lost": False,
    "errors": {},
    "hang_ms": {},
}


def make_device(index: int, **overrides) -> dict:
    """One simulated card with plausible consumer-card values; overrides replace fields."""
    dev = copy.deepcopy(_BASE_DEVICE)
    dev["uuid"] = f"GPU-{index:08x}-1111-2222-3333-444444444444"
    dev["pci_bus_id"] = f"00000000:{index + 1:02X}:00.0"
    dev.update(overrides)
    return dev


def make_scenario(num_gpus: int = 2, **overrides) -> dict:
    scenario = {
        "driver_version": "550.54.14",
        "cuda_driver_version": 12040,
        "init_error": None,
        "devices": [make_device(i) for i in range(num_gpus)],
    }
    scenario.update(overrides)
    return scenario


def write_scenario(path: Path, scenario: dict) -> None:
    """Replace the scenario file atomically, so a running fake library never reads half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(scenario, indent=1))
    os.replace(tmp, path)


# The simulated library looks at its scenario file on a call at most this often
# (RELOAD_CHECK_NS in tests/fake_nvml/fake_nvml.c).
SCENARIO_RECHECK_S = 0.1


def until_scenario_seen() -> None:
    """A pause the simulated library needs, not a guess at the machine's speed: once
    SCENARIO_RECHECK_S has passed since write_scenario(), the next NVML call sees the new
    scenario however slow the machine is, since any look at the file in the last interval
    came after the write. Half an interval more covers the clocks' rounding."""
    time.sleep(1.5 * SCENARIO_RECHECK_S)


def build_fake_nvml() -> Path:
    """Build tests/fake_nvml/libnvidia-ml.so.1 (make is a no-op when it is up to date)."""
    subprocess.run(["make", "-s", "-C", str(FAKE_NVML_DIR)], check=True)
    return FAKE_NVML_DIR


def fake_nvml_env(scenario_path: Path) -> dict:
    return {
        "LD_LIBRARY_PATH": str(FAKE_NVML_DIR),
        "FAKE_NVML_SCENARIO": str(scenario_path),
    }


@contextlib.contextmanager
def stopped_after(
    proc: ManagedProcess, ready_url: str, what: str, timeout: float = 30.0
) -> Iterator[None]:
    """Wait until the process answers ready_url (else fail with its output), then run the
    block; the process is stopped however the block ends."""
    try:
        try:
            wait_for_http(ready_url, timeout=timeout)
        except TimeoutError as exc:
            raise RuntimeError(f"{what} did not start:\n{proc.output()}") from exc
        yield
    finally:
        proc.stop()


@contextlib.contextmanager
def running_exporter(
    scenario_path: Path | None, *args: str, env: dict | None = None, port: int | None = None
) -> Iterator[tuple[ManagedProcess, str]]:
    """Start `python -m exporter` on a free loopback port (or the port given: a rig that
    comes back where Prometheus looks for it); yields (process, base_url)."""
    port = port or free_port()
    full_env = dict(env or {})
    if scenario_path is not None:
        full_env.update(fake_nvml_env(scenario_path))
    proc = ManagedProcess(
        [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}", *args],
        env=full_env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(base + "/healthz", timeout=30)
        except TimeoutError as exc:
            raise RuntimeError(f"exporter did not start:\n{proc.output()}") from exc
        yield proc, base
    finally:
        proc.stop()


def mirror_proc(fake: Path, real_pid: int, as_pid: int, cgroup: str | None = None) -> None:
    """A procfs tree in which as_pid shows real_pid's stat and cmdline (and a given cgroup)."""
    fake.mkdir(exist_ok=True)
    shutil.copyfile("/proc/stat", fake / "stat")
    target = fake / str(as_pid)
    target.mkdir(exist_ok=True)
    for name in ("stat", "cmdline"):
        (target / name).write_bytes(Path(f"/proc/{real_pid}/{name}").read_bytes())
    (target / "cgroup").write_text(
        cgroup if cgroup is not None else Path(f"/proc/{real_pid}/cgroup").read_text()
    )


@contextlib.contextmanager
def serving_exposition(body: Callable[[], bytes]) -> Iterator[str]:
    """A loopback HTTP server answering every GET with body() as Prometheus's text format (a
    rig as Prometheus scrapes it, written by the test); yields its host:port and is stopped
    however the block ends."""

    class Exposition(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            text = body()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exposition)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        serving.join(5)
