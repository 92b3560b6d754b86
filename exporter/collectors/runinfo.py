"""What a training run needs to be told apart, read from /proc for each GPU process: its start
time, a short safe run name (the script or module, never the whole command line unless asked)
and the short id of the container it runs in."""

from __future__ import annotations

import os
import re
import threading

# Interpreters whose first script or module argument names what is being run.
_INTERPRETER = re.compile(r"^(python|pypy)[0-9.]*[dmu]?$|^(node|ruby|perl|Rscript|julia)$")
# Launchers that start another script: the run is named after the script they launch.
_LAUNCHER_MODULES = {
    "torch.distributed.run",
    "torch.distributed.launch",
    "accelerate.commands.launch",
    "deepspeed.launcher.runner",
}
_LAUNCHER_SCRIPTS = {"torchrun", "accelerate", "deepspeed"}
# Interpreter options that take a value as the next argument (python's -W, -X; node's -r).
_OPTIONS_WITH_VALUE = {"-W", "-X", "-r", "--require", "-I"}
# A container's id as runtimes put it in cgroup paths: docker-<id>.scope, /docker/<id>,
# cri-containerd-<id>.scope, libpod-<id>.scope, /kubepods/.../<id>.
_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")
MAX_RUN_NAME = 64
# The one variable of a process's environment the exporter reads: the person a run belongs
# to, for runs whose Unix user says nothing (root in a container, a shared service account).
USER_VARIABLE = b"RIGWATCH_USER="
_USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MAX_ENVIRON = 1 << 20
MAX_COMMAND_LINE = 256
CACHE_LIMIT = 4096


def run_name(argv: list[str], process_name: str) -> str:
    """The script or module an interpreter runs ("train.py", "-m pkg.mod" -> "pkg.mod"), the
    script a launcher (torchrun, -m torch.distributed.run) starts, else the process name."""
    if not argv:
        return process_name
    program = os.path.basename(argv[0])
    rest = argv[1:]
    if _INTERPRETER.match(program):
        target = _interpreter_target(rest)
        if target is None:
            return process_name
        kind, value, after = target
        if kind == "module":
            if value in _LAUNCHER_MODULES:
                return _launched_script(after) or value
            return value[:MAX_RUN_NAME]
        program, rest = os.path.basename(value), after
        if program == "-c":
            return process_name
    if program in _LAUNCHER_SCRIPTS or program.removesuffix(".py") in _LAUNCHER_SCRIPTS:
        return _launched_script(rest) or program
    if _INTERPRETER.match(os.path.basename(argv[0])):
        return program[:MAX_RUN_NAME]
    return process_name


def _interpreter_target(args: list[str]) -> tuple[str, str, list[str]] | None:
    """("module", name, rest) for -m name, ("script", path, rest) for a script, or None for
    -c code or an interactive interpreter."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            return "module", args[i + 1], args[i + 2 :]
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            return "module", arg[2:], args[i + 1 :]
        if arg == "-c" or (arg.startswith("-c") and not arg.startswith("--")):
            return "script", "-c", []
        if arg == "--":
            return ("script", args[i + 1], args[i + 2 :]) if i + 1 < len(args) else None
        if arg.startswith("-"):
            i += 2 if arg in _OPTIONS_WITH_VALUE else 1
            continue
        return "script", arg, args[i + 1 :]
    return None


def _launched_script(args: list[str]) -> str | None:
    """The script a launcher starts: its first argument naming a .py file, or the module after
    a -m (torchrun -m pkg.train)."""
    for i, arg in enumerate(args):
        if arg.endswith(".py") and not arg.startswith("-"):
            return os.path.basename(arg)[:MAX_RUN_NAME]
        if arg in ("-m", "--module") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            return args[i + 1][:MAX_RUN_NAME]
    return None


def container_id(cgroup_text: str) -> str:
    """The container's 12-character short id from /proc/PID/cgroup, or "" on the host."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        for part in path.split("/"):
            match = _CONTAINER_ID.search("/" + part + "/")
            if match:
                return match.group(1)[:12]
    return ""


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def declared_user(procfs: str, pid: int) -> str:
    """The RIGWATCH_USER a process was started with ("" when unset, unreadable or not a
    plausible name). Only that variable is kept: the rest of the environment is scanned in
    place and dropped, never stored or exported. Reading another user's environ needs the
    same uid or CAP_SYS_PTRACE, as the exporter's container has."""
    try:
        fd = os.open(f"{procfs}/{pid}/environ", os.O_RDONLY)
    except OSError:
        return ""
    try:
        chunks = []
        size = 0
        while size < MAX_ENVIRON:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)
    for entry in b"".join(chunks).split(b"\0"):
        if entry.startswith(USER_VARIABLE):
            value = entry[len(USER_VARIABLE) :].decode("utf-8", "replace").strip()
            return value if _USER_NAME.match(value) else ""
    return ""


class RunInfo:
    """(start time in seconds since the epoch, run name, container id) per process, cached by
    (pid, start ticks) so a long run costs nothing after its first scrape; bounded."""

    def __init__(self, procfs: str, full_command_line: bool = False) -> None:
        self.procfs = procfs
        self.full_command_line = full_command_line
        self._cache: dict[int, tuple[bytes, tuple[float, str, str]]] = {}
        self._lock = threading.Lock()
        self._boot_time: float | None = None
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def boot_time(self) -> float | None:
        if self._boot_time is None:
            data = _read(f"{self.procfs}/stat") or b""
            for line in data.splitlines():
                if line.startswith(b"btime "):
                    self._boot_time = float(line.split()[1])
        return self._boot_time

    def lookup(
        self, pid: int, start_ticks: bytes, process_name: str
    ) -> tuple[float, str, str, bool]:
        """(start, run name, container id, whether that answer is cached). Never raises; a
        process gone mid-read keeps what could be read, and is not cached."""
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == start_ticks:
            return (*cached[1], True)
        boot = self.boot_time()
        start = boot + int(start_ticks) / self._ticks if boot is not None else float("nan")
        raw = _read(f"{self.procfs}/{pid}/cmdline") or b""
        argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0") if a]
        if self.full_command_line and argv:
            name = " ".join(argv)[:MAX_COMMAND_LINE]
        else:
            name = run_name(argv, process_name)
        cgroup = (_read(f"{self.procfs}/{pid}/cgroup") or b"").decode("utf-8", "replace")
        info = (start, name, container_id(cgroup))
        if not raw:  # a kernel thread or a process gone before the read: try again next time
            return (*info, False)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[pid] = (start_ticks, info)
        return (*info, True)
