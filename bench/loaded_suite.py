"""README's test command where people run it: with rigwatch's default ports already taken and,
optionally, CPU-bound work beside it. Prints one table: run, load, passed, failed, errors,
skipped, wall time.

    python3 bench/loaded_suite.py                     # 3 loaded runs and 1 quiet one
    python3 bench/loaded_suite.py --loaded 0 --quiet 1 -- -k exporter   # extra pytest arguments

Each run holds a listener on 0.0.0.0 (else 127.0.0.1) at the exporter's, the bot's,
Prometheus's, Alertmanager's, Grafana's and the push door's default ports (10735, 10736, 9090,
9093, 3000, 443; a port something else holds already is left to it and said so), and a loaded
run starts `stress-ng --cpu 2` beside the suite (installed with apt-get when missing). Each
run's whole output is kept (`--log-dir`, a new directory under /tmp by default). Everything it
starts it stops by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = (10735, 10736, 9090, 9093, 3000, 443)


def log(message: str) -> None:
    print(f"[loaded_suite {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def ports_held(ports: tuple[int, ...]) -> Iterator[list[str]]:
    """A listening socket on every port given: on every interface (which takes loopback's
    port too, as a rig's exporter listening on 0.0.0.0 does), else on loopback alone."""
    held: list[socket.socket] = []
    notes = []
    try:
        for port in ports:
            for host in ("0.0.0.0", "127.0.0.1"):
                sock = socket.socket()
                try:
                    sock.bind((host, port))
                    sock.listen(8)
                    held.append(sock)
                    break
                except OSError as err:
                    sock.close()
                    notes.append(f"{host}:{port} already taken ({err.strerror})")
        yield notes
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def cpu_load(workers: int) -> Iterator[None]:
    if workers <= 0:
        yield
        return
    if shutil.which("stress-ng") is None:
        log("installing stress-ng")
        subprocess.run(["apt-get", "install", "-y", "-qq", "stress-ng"], check=True)
    # --timeout 0: the load lasts as long as the run (stress-ng's own default stops it after
    # about 15 minutes, which a loaded run can outlast).
    command = ["stress-ng", "--cpu", str(workers), "--timeout", "0", "--quiet"]
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def run_suite(extra: list[str], log_path: Path) -> tuple[dict[str, int], float, int]:
    """README's test command once; its whole output kept in log_path. The counts come from
    pytest's summary line on stdout (pip's warnings on stderr must not hide it)."""
    start = time.monotonic()
    # Its own process group: stopped early (Ctrl-C, SIGTERM), the whole group (pytest, its
    # workers and the servers they started) gets SIGINT and, a minute later, SIGKILL.
    # stress-ng is stopped by cpu_load. What a test started in a session of its own (the
    # private Docker engine, a stack test's Prometheus) is outside the group and can outlive
    # an interrupted run: look for it with `ps` and stop it by pid.
    proc = subprocess.Popen(
        ["bash", "tests/run.sh", *extra],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    took = time.monotonic() - start
    log_path.write_text(stdout + "\n--- stderr ---\n" + stderr)
    lines = stdout.strip().splitlines()
    summary = next(
        (line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), ""
    )
    counts = {
        kind: int(match.group(1)) if (match := re.search(rf"(\d+) {kind}", summary)) else 0
        for kind in ("passed", "failed", "errors", "skipped")
    }
    if proc.returncode != 0:
        failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        log("\n".join(failures or (lines + stderr.splitlines())[-25:]))
        log(f"the whole output: {log_path}")
    return counts, took, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loaded", type=int, default=3, help="runs beside stress-ng --cpu 2")
    parser.add_argument("--quiet", type=int, default=1, help="runs without the CPU load")
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where each run's whole output is kept (default: a new directory under /tmp)",
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)
    # SIGTERM stops it as Ctrl-C does: the run under way and the load are stopped first.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="rigwatch-loaded-suite-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log(f"each run's output goes to {log_dir}")
    rows = []
    plan = [("stress-ng --cpu 2", 2)] * args.loaded + [("quiet", 0)] * args.quiet
    for number, (load, workers) in enumerate(plan, 1):
        with ports_held(DEFAULT_PORTS) as notes, cpu_load(workers):
            for note in notes:
                log(note)
            log(f"run {number}: {load}, default ports held")
            counts, took, code = run_suite(args.pytest_args, log_dir / f"run-{number}.log")
        rows.append((number, load, counts, took, code))
    print("| run | load | passed | failed | errors | skipped | wall time | exit |")
    print("|---|---|---|---|---|---|---|---|")
    for number, load, c, took, code in rows:
        print(
            f"| {number} | {load} | {c['passed']} | {c['failed']} | {c['errors']} "
            f"| {c['skipped']} | {took / 60:.1f} min | {code} |"
        )
    return 0 if all(code == 0 for *_, code in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
