"""The `host` collector: CPU, load, memory, swap, filesystems, disks, network, sensors, boot.

psutil reads /proc (its PROCFS_PATH follows --path.procfs). Temperatures and fans are read
straight from hwmon under --path.sysfs, the same files psutil reads, because psutil has no
way to point at another sysfs (a container's /host/sys). With --path.rootfs set (a container),
mounts and network counters come from init's view of /proc (the host's namespaces; needs
`--pid host`), not the container's own. Filesystems are their own unit of
work: statvfs on a dead network mount can hang, and that must cost only filesystem series.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from exporter.families import Sample, specs
from exporter.nvml.session import NVML_LANE
from exporter.scrape import Unit, UnitOutcome, families_from_outcomes
from exporter.settings import Settings, selected
from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "host")

FAMILIES = specs(
    ("rigwatch_host_cpu_seconds_total", "counter", "CPU time spent in each mode, per CPU."),
    ("rigwatch_host_load1", "gauge", "1-minute load average."),
    ("rigwatch_host_load5", "gauge", "5-minute load average."),
    ("rigwatch_host_load15", "gauge", "15-minute load average."),
    ("rigwatch_host_memory_total_bytes", "gauge", "Installed memory."),
    ("rigwatch_host_memory_available_bytes", "gauge", "Memory available to new programs."),
    ("rigwatch_host_swap_total_bytes", "gauge", "Swap space."),
    ("rigwatch_host_swap_used_bytes", "gauge", "Swap space in use."),
    ("rigwatch_host_swap_in_bytes_total", "counter", "Bytes swapped in from disk."),
    ("rigwatch_host_swap_out_bytes_total", "counter", "Bytes swapped out to disk."),
    ("rigwatch_host_filesystem_size_bytes", "gauge", "Filesystem size."),
    ("rigwatch_host_filesystem_free_bytes", "gauge", "Free space, including root's reserve."),
    ("rigwatch_host_filesystem_avail_bytes", "gauge", "Free space available to normal users."),
    ("rigwatch_host_filesystem_readonly", "gauge", "1 when the filesystem is mounted read-only."),
    ("rigwatch_host_disk_read_bytes_total", "counter", "Bytes read from the disk."),
    ("rigwatch_host_disk_written_bytes_total", "counter", "Bytes written to the disk."),
    ("rigwatch_host_disk_io_time_seconds_total", "counter", "Time the disk was busy with I/O."),
    ("rigwatch_host_network_receive_bytes_total", "counter", "Bytes received."),
    ("rigwatch_host_network_transmit_bytes_total", "counter", "Bytes sent."),
    ("rigwatch_host_network_receive_packets_total", "counter", "Packets received."),
    ("rigwatch_host_network_transmit_packets_total", "counter", "Packets sent."),
    ("rigwatch_host_network_receive_errors_total", "counter", "Receive errors."),
    ("rigwatch_host_network_transmit_errors_total", "counter", "Transmit errors."),
    ("rigwatch_host_temperature_celsius", "gauge", "Hardware sensor temperature (hwmon)."),
    ("rigwatch_host_temperature_high_celsius", "gauge", "The sensor's own high threshold."),
    ("rigwatch_host_temperature_critical_celsius", "gauge", "The sensor's own critical threshold."),
    ("rigwatch_host_fan_speed_rpm", "gauge", "Fan speed (hwmon)."),
    ("rigwatch_host_boot_time_seconds", "gauge", "Boot time, seconds since the Unix epoch."),
)

# Guest time is already counted inside user and nice; leaving it out keeps sum by mode exact.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
HWMON_RESCAN_SECONDS = 300.0
# The host's reads share the NVML collectors' lane. A lane of their own would overlap them with
# the NVML reads, but the two threads then trade the GIL around every short NVML call and every
# /proc read, which costs more than the overlap saves (about 1 ms of CPU per 8-card scrape,
# bench/bench_exporter.py). A stalled unit (a hung filesystem) still costs only itself: the
# units queued behind it move to a fresh lane (exporter/scrape.py).
HOST_LANE = NVML_LANE


@dataclass(frozen=True)
class Sensor:
    kind: str  # "temp" or "fan"
    chip: str
    sensor: str
    input_path: str
    high_celsius: float | None = None
    critical_celsius: float | None = None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _read_number(path: str) -> float | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # never export NaN or Inf


def _threshold(path: str) -> float | None:
    """A hwmon temperature limit in millidegrees; drivers write 0 (or less) for "none set",
    and a 0 °C limit would read as a sensor always past its mark."""
    value = _read_number(path)
    return value if value is not None and value > 0 else None


def scan_hwmon(sysfs: str) -> list[Sensor]:
    """Every temperature and fan input under <sysfs>/class/hwmon, with static thresholds."""
    root = os.path.join(sysfs, "class", "hwmon")
    try:
        devices = sorted(os.listdir(root), key=lambda d: (len(d), d))
    except OSError:
        return []
    chips: list[tuple[str, str]] = []
    for device in devices:
        path = os.path.join(root, device)
        chips.append((_read_text(os.path.join(path, "name")) or device, path))
    name_counts: dict[str, int] = {}
    for name, _ in chips:
        name_counts[name] = name_counts.get(name, 0) + 1
    ordinal: dict[str, int] = {}
    sensors: list[Sensor] = []
    for name, path in chips:
        chip = name
        if name_counts[name] > 1:
            # Two chips of one kind (two NVMe drives, two CPU sockets) need distinct labels.
            chip = f"{name}_{ordinal.get(name, 0)}"
            ordinal[name] = ordinal.get(name, 0) + 1
        try:
            files = os.listdir(path)
        except OSError:
            continue
        used: set[str] = set()
        for file_name in sorted(files):
            for kind in ("temp", "fan"):
                if not (file_name.startswith(kind) and file_name.endswith("_input")):
                    continue
                stem = file_name[: -len("_input")]
                label = _read_text(os.path.join(path, stem + "_label")) or stem
                if label in used:
                    label = f"{label}_{stem}"
                used.add(label)
                high = crit = None
                if kind == "temp":
                    high = _threshold(os.path.join(path, stem + "_max"))
                    crit = _threshold(os.path.join(path, stem + "_crit"))
                sensors.append(
                    Sensor(
                        kind,
                        chip,
                        label,
                        os.path.join(path, file_name),
                        None if high is None else high / 1000,
                        None if crit is None else crit / 1000,
                    )
                )
    return sensors


def _unescape_mount(text: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in text:
        return text
    return (
        text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


class HostCollector:
    name = "host"

    def __init__(self, settings: Settings) -> None:
        import psutil  # imported here so that a GPU-only exporter never loads it

        self.psutil = psutil
        psutil.PROCFS_PATH = settings.procfs
        self.settings = settings
        self.once = OnceLog(LOG)
        rootfs = settings.rootfs.rstrip("/")
        self.rootfs = rootfs
        procfs = settings.procfs.rstrip("/") or "/proc"
        # Outside a container our own mount table is the host's; inside one, init's is.
        self.mounts_path = f"{procfs}/1/mounts" if rootfs else f"{procfs}/self/mounts"
        self.net_dev_path = f"{procfs}/1/net/dev" if rootfs else f"{procfs}/net/dev"
        try:
            self.boot_time = psutil.boot_time()
        except (OSError, RuntimeError) as err:
            LOG.warning("boot time unavailable: %s", err)
            self.boot_time = None
        self._sensors = scan_hwmon(settings.sysfs)
        self._sensors_scanned = time.monotonic()
        self._scan_lock = threading.Lock()

    def plan(self) -> list[Unit]:
        return [
            Unit("host", self.read_host, HOST_LANE),
            Unit("host/filesystem", self.read_filesystems, HOST_LANE),
        ]

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        return families_from_outcomes(FAMILIES, outcomes), True

    def close(self) -> None:
        pass

    # --- units ----------------------------------------------------------------------------

    def read_host(self) -> list[Sample]:
        psutil = self.psutil
        settings = self.settings
        out: list[Sample] = []
        for cpu, times in enumerate(psutil.cpu_times(percpu=True)):
            label = str(cpu)
            for mode in CPU_MODES:
                value = getattr(times, mode, None)
                if value is not None:
                    out.append(
                        ("rigwatch_host_cpu_seconds_total", {"cpu": label, "mode": mode}, value)
                    )
        load1, load5, load15 = os.getloadavg()
        out.append(("rigwatch_host_load1", {}, load1))
        out.append(("rigwatch_host_load5", {}, load5))
        out.append(("rigwatch_host_load15", {}, load15))
        memory = psutil.virtual_memory()
        out.append(("rigwatch_host_memory_total_bytes", {}, memory.total))
        out.append(("rigwatch_host_memory_available_bytes", {}, memory.available))
        swap = psutil.swap_memory()
        out.append(("rigwatch_host_swap_total_bytes", {}, swap.total))
        out.append(("rigwatch_host_swap_used_bytes", {}, swap.used))
        out.append(("rigwatch_host_swap_in_bytes_total", {}, swap.sin))
        out.append(("rigwatch_host_swap_out_bytes_total", {}, swap.sout))

        disks = psutil.disk_io_counters(perdisk=True) or {}
        for device, io in disks.items():
            if not selected(device, None, settings.disk_exclude):
                continue
            labels = {"device": device}
            out.append(("rigwatch_host_disk_read_bytes_total", labels, io.read_bytes))
            out.append(("rigwatch_host_disk_written_bytes_total", labels, io.write_bytes))
            busy = getattr(io, "busy_time", None)
            if busy is not None:
                out.append(("rigwatch_host_disk_io_time_seconds_total", labels, busy / 1000))

        for device, counters in self._read_net_dev():
            if not selected(device, settings.netdev_include, settings.netdev_exclude):
                continue
            labels = {"device": device}
            rx_bytes, rx_packets, rx_errors, tx_bytes, tx_packets, tx_errors = counters
            out.append(("rigwatch_host_network_receive_bytes_total", labels, rx_bytes))
            out.append(("rigwatch_host_network_transmit_bytes_total", labels, tx_bytes))
            out.append(("rigwatch_host_network_receive_packets_total", labels, rx_packets))
            out.append(("rigwatch_host_network_transmit_packets_total", labels, tx_packets))
            out.append(("rigwatch_host_network_receive_errors_total", labels, rx_errors))
            out.append(("rigwatch_host_network_transmit_errors_total", labels, tx_errors))

        out.extend(self._read_sensors())
        if self.boot_time is not None:
            out.append(("rigwatch_host_boot_time_seconds", {}, self.boot_time))
        return out

    def _read_net_dev(self) -> list[tuple[str, tuple[int, ...]]]:
        """(device, (rx bytes, rx packets, rx errors, tx bytes, tx packets, tx errors)).

        The same file psutil.net_io_counters() reads, but in a container it must be init's
        (the host's network namespace), which psutil cannot be pointed at.
        """
        with open(self.net_dev_path) as handle:
            lines = handle.read().splitlines()[2:]
        out = []
        for line in lines:
            device, sep, rest = line.partition(":")
            fields = rest.split()
            if not sep or len(fields) < 11:
                continue
            numbers = tuple(int(fields[i]) for i in (0, 1, 2, 8, 9, 10))
            out.append((device.strip(), numbers))
        return out

    def _read_sensors(self) -> list[Sample]:
        if time.monotonic() - self._sensors_scanned > HWMON_RESCAN_SECONDS:
            with self._scan_lock:
                self._sensors = scan_hwmon(self.settings.sysfs)
                self._sensors_scanned = time.monotonic()
        out: list[Sample] = []
        for sensor in self._sensors:
            value = _read_number(sensor.input_path)
            if value is None:
                continue  # sensor absent or its driver answers an error right now
            labels = {"chip": sensor.chip, "sensor": sensor.sensor}
            if sensor.kind == "fan":
                out.append(("rigwatch_host_fan_speed_rpm", labels, value))
                continue
            out.append(("rigwatch_host_temperature_celsius", labels, value / 1000))
            if sensor.high_celsius is not None:
                out.append(("rigwatch_host_temperature_high_celsius", labels, sensor.high_celsius))
            if sensor.critical_celsius is not None:
                out.append(
                    ("rigwatch_host_temperature_critical_celsius", labels, sensor.critical_celsius)
                )
        return out

    def read_filesystems(self) -> list[Sample]:
        settings = self.settings
        try:
            with open(self.mounts_path) as handle:
                lines = handle.read().splitlines()
        except OSError as err:
            self.once.log(logging.WARNING, ("mounts", str(err)), "cannot read mounts: %s", err)
            raise
        mounts: dict[str, tuple[str, str, bool]] = {}
        for line in lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            device, mountpoint, fstype = (
                _unescape_mount(parts[0]),
                _unescape_mount(parts[1]),
                parts[2],
            )
            if settings.fs_types_exclude is not None and settings.fs_types_exclude.search(fstype):
                continue
            if not selected(
                mountpoint, settings.fs_mount_points_include, settings.fs_mount_points_exclude
            ):
                continue
            # A later mount on the same point hides the earlier one; keep the visible one.
            mounts.pop(mountpoint, None)
            mounts[mountpoint] = (device, fstype, "ro" in parts[3].split(","))
        out: list[Sample] = []
        for mountpoint, (device, fstype, readonly) in mounts.items():
            try:
                stat = os.statvfs(self.rootfs + mountpoint)
            except OSError as err:
                self.once.log(
                    logging.INFO,
                    ("statvfs", mountpoint, err.errno),
                    "filesystem %s left out: %s",
                    mountpoint,
                    err.strerror,
                )
                continue
            labels = {"device": device, "fstype": fstype, "mountpoint": mountpoint}
            out.append(
                ("rigwatch_host_filesystem_size_bytes", labels, stat.f_blocks * stat.f_frsize)
            )
            out.append(
                ("rigwatch_host_filesystem_free_bytes", labels, stat.f_bfree * stat.f_frsize)
            )
            out.append(
                ("rigwatch_host_filesystem_avail_bytes", labels, stat.f_bavail * stat.f_frsize)
            )
            out.append(("rigwatch_host_filesystem_readonly", labels, 1.0 if readonly else 0.0))
        return out
