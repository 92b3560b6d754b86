"""The exporter's validated configuration, built once by the command line and shared read-only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.webconfig import WebConfig

DEFAULT_PORT = 10735
DEFAULT_CRITICAL_XIDS = (48, 62, 64, 74, 79, 92, 94, 95, 119, 120)

# Filesystems that describe no storage a rig owner can fill: kernel interfaces, container
# layers, RAM-backed scratch space and FUSE mounts (often network or virtual).
DEFAULT_FS_TYPES_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|efivarfs|fusectl|"
    r"fuse\..*|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|ramfs|rpc_pipefs|"
    r"securityfs|selinuxfs|squashfs|sysfs|tmpfs|tracefs)$"
)
DEFAULT_MOUNT_POINTS_EXCLUDE = (
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
DEFAULT_NETDEV_EXCLUDE = r"^lo$"
# Partitions and RAM/loop devices: their traffic is already counted on the whole disk.
DEFAULT_DISK_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$"


@dataclass(frozen=True)
class Settings:
    """Everything the exporter needs to know, with regular expressions compiled once."""

    listen_host: str = ""
    listen_port: int = DEFAULT_PORT
    collectors: frozenset[str] = frozenset({"gpu", "gpu_process", "xid", "host", "pci"})
    fs_mount_points_include: re.Pattern | None = None
    fs_mount_points_exclude: re.Pattern | None = re.compile(DEFAULT_MOUNT_POINTS_EXCLUDE)
    fs_types_exclude: re.Pattern | None = re.compile(DEFAULT_FS_TYPES_EXCLUDE)
    netdev_include: re.Pattern | None = None
    netdev_exclude: re.Pattern | None = re.compile(DEFAULT_NETDEV_EXCLUDE)
    disk_exclude: re.Pattern | None = re.compile(DEFAULT_DISK_EXCLUDE)
    critical_xids: frozenset[int] = field(default_factory=lambda: frozenset(DEFAULT_CRITICAL_XIDS))
    scrape_timeout_seconds: float = 5.0
    nvml_retry_max_seconds: float = 60.0
    procfs: str = "/proc"
    sysfs: str = "/sys"
    rootfs: str = "/"
    log_level: str = "info"
    process_full_command_line: bool = False
    # --web.config.file, read and checked (None: no file; every page is open).
    web_config: WebConfig | None = field(default=None, compare=False)


def selected(name: str, include: re.Pattern | None, exclude: re.Pattern | None) -> bool:
    """node_exporter's rule: an include pattern, when set, must match; the exclude must not."""
    if include is not None and not include.search(name):
        return False
    return exclude is None or not exclude.search(name)
