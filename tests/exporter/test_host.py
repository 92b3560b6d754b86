"""The host collector: CPU, memory, swap, filesystems, disks, network, hwmon sensors, boot."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.exporter.scrapes import assert_no_nan, scrape
from tests.support import ManagedProcess, free_port, wait_for_http

HOST_ONLY = (
    "--no-collector.gpu",
    "--no-collector.gpu_process",
    "--no-collector.xid",
    "--no-collector.gpm",
)


def _run_host_exporter(*args: str, wrapper: list[str] | None = None):
    port = free_port()
    argv = [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}"]
    argv += [*HOST_ONLY, *args]
    if wrapper is not None:
        # The wrapper's last item is a shell script prefix ending in "exec".
        argv = [*wrapper[:-1], f"{wrapper[-1]} {shlex.join(argv)}"]
    proc = ManagedProcess(argv)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz", timeout=30)
    except Exception:
        output = proc.output()
        proc.stop()
        raise RuntimeError(output) from None
    return proc, base


@pytest.fixture
def host_exporter():
    started = []

    def start(*args: str, wrapper: list[str] | None = None) -> str:
        proc, base = _run_host_exporter(*args, wrapper=wrapper)
        started.append(proc)
        return base

    yield start
    for proc in started:
        proc.stop()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cpu_memory_swap_load_disks_network_and_boot(host_exporter):
    base = host_exporter()
    before_disks = psutil.disk_io_counters(perdisk=True)
    s = scrape(base)
    cpus = {labels["cpu"] for labels, _ in s.all("rigwatch_host_cpu_seconds_total")}
    assert cpus == {str(i) for i in range(psutil.cpu_count())}
    modes = {labels["mode"] for labels, _ in s.all("rigwatch_host_cpu_seconds_total", cpu="0")}
    assert modes == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert s.value("rigwatch_host_cpu_seconds_total", cpu="0", mode="idle") > 0
    assert s.families["rigwatch_host_cpu_seconds"].type == "counter"
    for load in ("rigwatch_host_load1", "rigwatch_host_load5", "rigwatch_host_load15"):
        assert s.value(load) >= 0
    assert s.value("rigwatch_host_memory_total_bytes") == psutil.virtual_memory().total
    assert 0 < s.value("rigwatch_host_memory_available_bytes") <= psutil.virtual_memory().total
    swap = psutil.swap_memory()
    assert s.value("rigwatch_host_swap_total_bytes") == swap.total
    assert s.value("rigwatch_host_swap_used_bytes") >= 0
    assert s.value("rigwatch_host_swap_in_bytes_total") >= 0
    assert s.value("rigwatch_host_swap_out_bytes_total") >= 0
    assert abs(s.value("rigwatch_host_boot_time_seconds") - psutil.boot_time()) < 2

    disks = {labels["device"] for labels, _ in s.all("rigwatch_host_disk_read_bytes_total")}
    partitions = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")
    expected = {name for name in before_disks if not partitions.search(name)}
    assert disks == expected and disks
    for device in disks:
        assert s.value("rigwatch_host_disk_read_bytes_total", device=device) >= (
            before_disks[device].read_bytes
        )
        assert s.value("rigwatch_host_disk_written_bytes_total", device=device) >= 0
        assert s.value("rigwatch_host_disk_io_time_seconds_total", device=device) >= 0

    nics = set(psutil.net_io_counters(pernic=True))
    reported = {
        labels["device"] for labels, _ in s.all("rigwatch_host_network_receive_bytes_total")
    }
    assert reported == nics - {"lo"}  # lo is excluded by default
    for family in (
        "rigwatch_host_network_transmit_bytes_total",
        "rigwatch_host_network_receive_packets_total",
        "rigwatch_host_network_transmit_packets_total",
        "rigwatch_host_network_receive_errors_total",
        "rigwatch_host_network_transmit_errors_total",
    ):
        assert {labels["device"] for labels, _ in s.all(family)} == reported
    assert s.value("rigwatch_scrape_collector_success", collector="host") == 1


def test_network_device_include_and_exclude(host_exporter):
    s = scrape(host_exporter("--collector.netdev.device-include=^lo$"))
    assert [
        labels["device"] for labels, _ in s.all("rigwatch_host_network_receive_bytes_total")
    ] == ["lo"]
    s = scrape(host_exporter("--collector.netdev.device-exclude=."))
    assert s.all("rigwatch_host_network_receive_bytes_total") == []


def test_filesystems_leave_pseudo_filesystems_out_by_default(host_exporter):
    s = scrape(host_exporter())
    root = s.all("rigwatch_host_filesystem_size_bytes", mountpoint="/")
    assert len(root) == 1
    labels, size = root[0]
    usage = os.statvfs("/")
    assert size == usage.f_blocks * usage.f_frsize
    assert s.value("rigwatch_host_filesystem_avail_bytes", mountpoint="/") > 0
    assert s.value("rigwatch_host_filesystem_free_bytes", mountpoint="/") >= s.value(
        "rigwatch_host_filesystem_avail_bytes", mountpoint="/"
    )
    assert s.value("rigwatch_host_filesystem_readonly", mountpoint="/") == 0
    fstypes = {labels["fstype"] for labels, _ in s.all("rigwatch_host_filesystem_size_bytes")}
    assert not fstypes & {"proc", "sysfs", "tmpfs", "devtmpfs", "cgroup", "cgroup2", "overlay"}
    mountpoints = {
        labels["mountpoint"] for labels, _ in s.all("rigwatch_host_filesystem_size_bytes")
    }
    assert not any(m.startswith(("/proc", "/sys", "/dev")) for m in mountpoints)

    # Only the include pattern's mount points; and an fs type can be excluded.
    s = scrape(host_exporter("--collector.filesystem.mount-points-include=^/$"))
    assert {labels["mountpoint"] for labels, _ in s.all("rigwatch_host_filesystem_size_bytes")} == {
        "/"
    }
    s = scrape(host_exporter(f"--collector.filesystem.fs-types-exclude=^{labels['fstype']}$"))
    assert s.all("rigwatch_host_filesystem_size_bytes", mountpoint="/") == []


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root for a mount namespace"
)
def test_readonly_and_tmpfs_mounts_in_a_private_mount_namespace(host_exporter, tmp_path):
    # A read-only bind mount and a tmpfs exist only inside the exporter's own mount namespace,
    # so the machine (and other tests) never see them.
    source, readonly, scratch = tmp_path / "src", tmp_path / "ro", tmp_path / "scratch"
    for path in (source, readonly, scratch):
        path.mkdir()
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount not permitted here: {probe.stderr.decode().strip()}")
    setup = f"mount --bind -o ro {source} {readonly} && mount -t tmpfs tmpfs {scratch} && exec"
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup]
    s = scrape(host_exporter(wrapper=wrapper))
    assert s.value("rigwatch_host_filesystem_readonly", mountpoint=str(readonly)) == 1
    assert s.value("rigwatch_host_filesystem_readonly", mountpoint="/") == 0
    assert s.all("rigwatch_host_filesystem_size_bytes", mountpoint=str(scratch)) == []

    s = scrape(
        host_exporter(
            "--collector.filesystem.fs-types-exclude=^(proc|sysfs|cgroup2?|devpts)$",
            wrapper=wrapper,
        )
    )
    assert (
        s.value("rigwatch_host_filesystem_size_bytes", mountpoint=str(scratch), fstype="tmpfs") > 0
    )


def test_hwmon_temperatures_with_thresholds_and_fans(host_exporter, tmp_path):
    hwmon = tmp_path / "sys" / "class" / "hwmon"
    chips = {
        "hwmon0": {
            "name": "coretemp",
            "temp1_input": "51000",
            "temp1_label": "Package id 0",
            "temp1_max": "80000",
            "temp1_crit": "100000",
            "temp2_input": "47500",
            "temp2_label": "Core 0",
            "temp2_crit": "0",  # drivers write 0 for "no limit"
        },
        "hwmon1": {
            "name": "nct6798",
            "fan1_input": "1180",
            "fan2_input": "0",
            "fan2_label": "CPU_OPT",
        },
        # Two chips of one kind, e.g. two NVMe drives: distinct chip labels.
        "hwmon2": {"name": "nvme", "temp1_input": "38850", "temp1_label": "Composite"},
        "hwmon3": {"name": "nvme", "temp1_input": "41850", "temp1_label": "Composite"},
    }
    for chip, files in chips.items():
        for name, text in files.items():
            _write(hwmon / chip / name, text)
    base = host_exporter(f"--path.sysfs={tmp_path / 'sys'}")
    s = scrape(base)
    package = {"chip": "coretemp", "sensor": "Package id 0"}
    assert s.value("rigwatch_host_temperature_celsius", **package) == 51
    assert s.value("rigwatch_host_temperature_high_celsius", **package) == 80
    assert s.value("rigwatch_host_temperature_critical_celsius", **package) == 100
    core = {"chip": "coretemp", "sensor": "Core 0"}
    assert s.value("rigwatch_host_temperature_celsius", **core) == 47.5
    assert s.all("rigwatch_host_temperature_high_celsius", **core) == []  # no threshold file
    assert s.all("rigwatch_host_temperature_critical_celsius", **core) == []  # a 0 limit
    assert s.value("rigwatch_host_fan_speed_rpm", chip="nct6798", sensor="fan1") == 1180
    assert s.value("rigwatch_host_fan_speed_rpm", chip="nct6798", sensor="CPU_OPT") == 0
    assert s.value("rigwatch_host_temperature_celsius", chip="nvme_0", sensor="Composite") == 38.85
    assert s.value("rigwatch_host_temperature_celsius", chip="nvme_1", sensor="Composite") == 41.85

    # Readings are live; the sensor list and thresholds are read once.
    _write(hwmon / "hwmon0" / "temp1_input", "93000")
    assert scrape(base).value("rigwatch_host_temperature_celsius", **package) == 93
    # A sensor whose driver answers an error has no series, never a stale or zero value.
    (hwmon / "hwmon0" / "temp2_input").write_text("not a number\n")
    assert scrape(base).all("rigwatch_host_temperature_celsius", **core) == []
    (hwmon / "hwmon0" / "temp2_input").write_text("nan\n")
    text = scrape(base).text
    assert_no_nan(text)
    assert 'sensor="Core 0"' not in text


def test_no_hwmon_means_no_sensor_series(host_exporter, tmp_path):
    s = scrape(host_exporter(f"--path.sysfs={tmp_path}"))
    assert s.all("rigwatch_host_temperature_celsius") == []
    assert s.all("rigwatch_host_fan_speed_rpm") == []
    assert s.value("rigwatch_scrape_collector_success", collector="host") == 1


def test_container_layout_reads_the_host_root_under_path_rootfs(host_exporter, tmp_path):
    # As in the Docker image: the host's / mounted at some path, mounts and network counters
    # from init's /proc entries. Here the "host root" is a directory on the same filesystem.
    host_root = tmp_path / "host"
    host_root.mkdir()
    s = scrape(host_exporter(f"--path.rootfs={host_root}"))
    usage = os.statvfs(host_root)
    assert s.value("rigwatch_host_filesystem_size_bytes", mountpoint="/") == (
        usage.f_blocks * usage.f_frsize
    )
    mountpoints = {
        labels["mountpoint"] for labels, _ in s.all("rigwatch_host_filesystem_size_bytes")
    }
    assert not any(m.startswith(str(host_root)) for m in mountpoints)  # reported without prefix
    with open("/proc/1/net/dev") as handle:
        init_devices = {line.split(":")[0].strip() for line in handle.read().splitlines()[2:]}
    reported = {
        labels["device"] for labels, _ in s.all("rigwatch_host_network_receive_bytes_total")
    }
    assert reported == init_devices - {"lo"}
    assert s.value("rigwatch_scrape_collector_success", collector="host") == 1
