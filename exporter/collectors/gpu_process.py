"""The `gpu_process` collector: device memory and SM utilisation of every process on each GPU.

`process` is the short name and `user` the owner: the process's RIGWATCH_USER environment
variable when it sets one (a run as root in a container names its person so), else its Unix
user. Full command lines can hold secrets and stay out; of the environment only that one
variable is read. Names are cached by (pid, start time) so a pid reused by another program is
never given the old program's name. The start time itself is read from /proc/PID/stat once per
process where a pidfd can watch the process (StartTimes), else once per scrape.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time

from exporter.collectors.percard import PerCardCollector
from exporter.collectors.runinfo import RunInfo, declared_user
from exporter.exposition import LabelSet
from exporter.families import Sample, specs
from exporter.nvml.device import Gpu
from exporter.nvml.errors import NOT_FOUND, plausible
from exporter.nvml.processes import ProcessReads
from exporter.nvml.session import NvmlSession
from exporter.scrape import Unit
from exporter.settings import Settings

FAMILIES = specs(
    (
        "rigwatch_gpu_process_memory_bytes",
        "gauge",
        "Device memory used by a process (compute and graphics contexts).",
    ),
    (
        "rigwatch_gpu_process_sm_utilization_ratio",
        "gauge",
        "Fraction of time the process had a kernel running on the SMs (0-1), latest sample.",
    ),
    (
        "rigwatch_gpu_process_start_time_seconds",
        "gauge",
        "When the process started (seconds since the epoch), with its run name and container.",
    ),
)

# How far back nvmlDeviceGetProcessUtilization samples are considered current.
SM_SAMPLE_WINDOW_SECONDS = 5.0
NAME_CACHE_LIMIT = 4096
# At most this many pidfds held open (one per GPU process); past it, start times are read from
# /proc each scrape, so a rig with thousands of GPU processes cannot run the exporter out of fds.
PIDFD_LIMIT = 256
# Pidfds of processes no scrape has looked up for between one and two of these are closed: a
# process that released its GPU (or exited) holds no fd of the exporter's for long.
PIDFD_SWEEP_SECONDS = 60.0


class _Seen:
    """One process on one card as a scrape last described it: valid while the card keeps its
    Device and the pid its start time."""

    __slots__ = ("device", "start", "labels", "start_sample")

    def __init__(self, device: object, start: bytes, labels: LabelSet, sample: Sample) -> None:
        self.device = device
        self.start = start
        self.labels = labels
        self.start_sample = sample


class ProcessNames:
    """pid -> (process short name, user), cached by (pid, start time); bounded. A process's
    series on a card (its label sets and start-time sample) are kept while its pid keeps its
    start time, which StartTimes knows without a read while the process lives."""

    def __init__(self, procfs: str, full_command_line: bool = False) -> None:
        self.procfs = procfs
        self.runs = RunInfo(procfs, full_command_line)
        self._cache: dict[int, tuple[bytes, str, str]] = {}
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int], _Seen] = {}  # by (card uuid, pid)
        self._start_time = StartTimes(procfs, self._lock)

    def sweep(self) -> None:
        """Let go of what processes no longer on a GPU hold (StartTimes.sweep)."""
        self._start_time.sweep()

    def close(self) -> None:
        """Close the pidfds held; later lookups read /proc each time."""
        self._start_time.close()

    def series(self, gpu: Gpu, pid: int) -> tuple[LabelSet, Sample | None]:
        """The gpu, uuid, pid, process and user labels of pid on gpu, and its start-time
        sample (labelled with its run name and container; None when the process is gone, a
        pid NVML still lists but /proc no longer has). Never raises."""
        start = self._start_time(pid)
        device = gpu.device
        seen = self._seen.get((gpu.uuid, pid))
        if seen is not None and seen.start == start and seen.device is device:
            return seen.labels, seen.start_sample
        process, user, named = self._name(pid, start)
        labels = LabelSet(gpu=device.index, uuid=gpu.uuid, pid=str(pid), process=process, user=user)
        if start is None:
            return labels, None
        seconds, run, container, complete = self.runs.lookup(pid, start, process)
        sample = (
            "rigwatch_gpu_process_start_time_seconds",
            LabelSet(labels, run=run, container=container),
            seconds,
        )
        if named and complete:
            # Only answers that are themselves final: a process read half-gone is read
            # again next scrape.
            with self._lock:
                if len(self._seen) >= NAME_CACHE_LIMIT:
                    self._seen.clear()
                self._seen[gpu.uuid, pid] = _Seen(device, start, labels, sample)
        return labels, sample

    def _name(self, pid: int, start: bytes | None) -> tuple[str, str, bool]:
        """(name, user, whether that answer is cached) for pid started at start."""
        if start is None:
            return "", "", False
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == start:
            return cached[1], cached[2], True
        name, user = _describe(pid)
        declared = declared_user(self.procfs, pid)
        if declared and (name or user):
            user = declared
        if not (name or user):
            return name, user, False
        with self._lock:
            if len(self._cache) >= NAME_CACHE_LIMIT:
                self._cache.clear()
            self._cache[pid] = (start, name, user)
        return name, user, True


def read_start_time(procfs: str, pid: int) -> bytes | None:
    """Field 22 (starttime, in clock ticks since boot) of procfs/pid/stat as its bytes; None
    when the process is gone or unreadable."""
    # os.open/os.read: this can run for every GPU process on every scrape, and the buffered
    # file object costs several times the read itself.
    try:
        fd = os.open(f"{procfs}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Counted after the parenthesised command name, which may itself contain spaces and
    # parentheses.
    fields = data[data.rfind(b")") + 2 :].split(None, 20)
    return fields[19] if len(fields) > 19 else None


def same_pid_namespace(procfs: str) -> bool:
    """Whether pids in procfs are this process's pids (its own /proc, or a host's procfs
    mounted into a container that shares the host's pid namespace): procfs/self names us."""
    try:
        return os.readlink(f"{procfs}/self") == str(os.getpid())
    except OSError:
        return False


class _Held:
    """A pidfd on one process and the start time read while the fd was open."""

    __slots__ = ("fd", "start", "exited", "used")

    def __init__(self, fd: int, start: bytes, exited: select.poll) -> None:
        self.fd = fd
        self.start = start
        self.exited = exited  # poll(0) on it is non-empty once the process has exited
        self.used = True


class StartTimes:
    """pid -> start time (read_start_time), reading /proc once per process instead of once per
    scrape where it can.

    A pid is only given to a new process after the old one has exited, and a pidfd becomes
    readable when its process exits. So with a pidfd opened before the /proc read and still
    unreadable after it, the start time read is that process's, and stays the pid's start time
    for as long as the fd stays unreadable: later lookups poll the fd (well under a
    microsecond) instead of reading /proc (an open, a read and a close). A readable fd is closed
    and the pid read afresh, which is how a reused pid gets its new start time. Used only where
    pidfd_open exists (Linux 5.3+) and procfs's pids are ours; on any error of its own (EPERM,
    ENOSYS, EMFILE) a lookup reads /proc as before."""

    def __init__(self, procfs: str, lock: threading.Lock) -> None:
        self.procfs = procfs
        self._lock = lock  # every use of a held fd is under it: none is polled after its close
        usable = hasattr(os, "pidfd_open") and same_pid_namespace(procfs)
        self._held: dict[int, _Held] | None = {} if usable else None
        self._swept = time.monotonic()
        self.sweep_seconds = PIDFD_SWEEP_SECONDS

    def __call__(self, pid: int) -> bytes | None:
        if self._held is None:
            return read_start_time(self.procfs, pid)
        with self._lock:
            held = self._held
            if held is None:
                return read_start_time(self.procfs, pid)
            entry = held.get(pid)
            if entry is not None:
                if not entry.exited.poll(0):
                    entry.used = True
                    return entry.start
                del held[pid]
                os.close(entry.fd)
            full = len(held) >= PIDFD_LIMIT
        return read_start_time(self.procfs, pid) if full else self._hold(pid)

    def _hold(self, pid: int) -> bytes | None:
        try:
            fd = os.pidfd_open(pid)
        except OSError as err:
            if err.errno in (errno.ENOSYS, errno.EPERM):
                # A kernel or a seccomp profile without pidfds: every later lookup reads /proc.
                self.close()
            return read_start_time(self.procfs, pid)
        kept = False
        try:
            start = read_start_time(self.procfs, pid)
            if start is None:
                return None
            exited = select.poll()
            exited.register(fd, select.POLLIN)
            if exited.poll(0):
                # The process left between the fd and the read: the read may be of its pid's
                # next process, so it is answered but not tied to this fd.
                return start
            with self._lock:
                held = self._held
                if held is not None and pid not in held and len(held) < PIDFD_LIMIT:
                    held[pid] = _Held(fd, start, exited)
                    kept = True
            return start
        finally:
            if not kept:
                os.close(fd)

    def sweep(self) -> None:
        """Close the pidfds no lookup used since the sweep before, once sweep_seconds have
        passed since it (called every scrape; the time check is all most calls do)."""
        now = time.monotonic()
        if now - self._swept < self.sweep_seconds:
            return
        with self._lock:
            self._swept = now
            held = self._held or {}
            for pid in [pid for pid, entry in held.items() if not entry.used]:
                os.close(held.pop(pid).fd)
            for entry in held.values():
                entry.used = False

    def held(self) -> int:
        """How many pidfds are held open now."""
        with self._lock:
            return len(self._held or ())

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, None
            for entry in (held or {}).values():
                os.close(entry.fd)


def _describe(pid: int) -> tuple[str, str]:
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name = process.name()
            try:
                user = process.username()
            except (KeyError, psutil.AccessDenied):
                # No passwd entry (a container user): the numeric uid still says who.
                user = str(process.uids().real)
    except psutil.NoSuchProcess:
        return "", ""
    except (psutil.AccessDenied, OSError):
        return "", ""
    return name, user


def read_processes(
    session: NvmlSession, reads: ProcessReads, names: ProcessNames, gpu: Gpu
) -> list[Sample]:
    """One series per process on the card (run through NvmlSession.read_card)."""
    nv = session.nvml
    call = session.call
    memory_by_pid: dict[int, int] = {}
    for what, lister in (
        ("nvmlDeviceGetComputeRunningProcesses", reads.compute_processes),
        ("nvmlDeviceGetGraphicsRunningProcesses", reads.graphics_processes),
    ):
        for pid, used in call(gpu, what, lister) or ():
            # A process with compute and graphics contexts is listed twice: one series.
            previous = memory_by_pid.get(pid)
            if used is not None and (previous is None or used > previous):
                memory_by_pid[pid] = used
            elif previous is None:
                memory_by_pid[pid] = -1

    sm_by_pid: dict[int, tuple[int, int]] = {}
    device = gpu.device
    what = "nvmlDeviceGetProcessUtilization"
    if memory_by_pid and what not in device.unavailable:
        since = int((time.time() - SM_SAMPLE_WINDOW_SECONDS) * 1e6)
        try:
            samples = reads.utilization(device.handle, since)
        except nv.NVMLError as err:
            if err.value == NOT_FOUND:  # no samples in the window: nothing ran
                samples = []
            else:
                samples = session.calls.fail_like(gpu, what, err.value) or []
        for pid, stamp, sm_util in samples:
            if not plausible(sm_util):
                continue
            latest = sm_by_pid.get(pid)
            if latest is None or stamp >= latest[0]:
                sm_by_pid[pid] = (stamp, sm_util)

    out: list[Sample] = []
    series = names.series
    for pid, used in memory_by_pid.items():
        labels, start = series(gpu, pid)
        if used >= 0:
            out.append(("rigwatch_gpu_process_memory_bytes", labels, used))
        sm = sm_by_pid.get(pid)
        if sm is not None:
            out.append(("rigwatch_gpu_process_sm_utilization_ratio", labels, sm[1] / 100))
        if start is not None:
            out.append(start)
    return out


class GpuProcessCollector(PerCardCollector):
    name = "gpu_process"
    families = FAMILIES

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        super().__init__(settings, session)
        self.names = ProcessNames(
            settings.procfs.rstrip("/") or "/proc", settings.process_full_command_line
        )
        self._reads: ProcessReads | None = None

    def plan(self) -> list[Unit]:
        self.names.sweep()
        return super().plan()

    def close(self) -> None:
        self.names.close()

    def read_card(self, gpu: Gpu) -> list[Sample]:
        reads = self._reads
        if reads is None or reads.nv is not self.session.nvml:
            # Built for the loaded pynvml module (cards are only listed once it is loaded).
            reads = self._reads = ProcessReads(self.session.nvml)
        return read_processes(self.session, reads, self.names, gpu)
