"""PromQL that more than one rigwatch panel or dashboard asks: the variable filters, the
per-card "not supported" form, and the host and card figures shown in several places."""

from __future__ import annotations

# Every query is filtered by the dashboard variables; per-card queries by the gpu one too.
HOST = 'job=~"$job", rig=~"$rig", instance=~"$instance"'
GPU = HOST + ', gpu=~"$gpu"'
CARD_KEY = "job, instance, gpu, uuid"
# Aggregations keep rig too, so their rows line up with the other per-card queries.
CARD_BY = "job, rig, instance, gpu, uuid"
# Memory-backed and pseudo filesystems, as in prometheus/rules/host.yml.
PSEUDO_FS = (
    'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|overlay|iso9660|autofs|nfs.*|cifs|smb.*'
    '|fuse\\\\..+|fusectl"'
)


def host(metric: str, extra: str = "") -> str:
    """A host metric filtered by the job, rig and instance variables (and extra matchers)."""
    return f"{metric}{{{HOST}{', ' + extra if extra else ''}}}"


def gpu(metric: str, extra: str = "") -> str:
    """A card metric filtered by the job, rig, instance and gpu variables (and extra matchers)."""
    return f"{metric}{{{GPU}{', ' + extra if extra else ''}}}"


def rate(metric: str, selector: str = HOST) -> str:
    return f"rate({metric}{{{selector}}}[$__rate_interval])"


def per_card(expr: str, by: str = "rig, instance, gpu") -> str:
    """Per-card value, NaN for a card that exists but cannot report it.

    A card lacking the field has no series, which alone looks like a dead exporter; joining
    rigwatch_gpu_info * NaN makes it answer NaN (shown "not supported on this card"), while a
    filter nothing matches still answers nothing (shown "no data").
    """
    return f"max by ({by}) (\n  {expr}\n  or on ({CARD_KEY})\n  {gpu('rigwatch_gpu_info')} * NaN\n)"


def card_pair(left: str, operator: str, right: str) -> str:
    """Two per-card metrics of the same card combined, e.g. power over its limit."""
    return f"{gpu(left)} {operator} on ({CARD_KEY}) group_left () {gpu(right)}"


def critical_xids(by: str) -> str:
    """Critical Xid events per card, 0 (not absent) for a card that has had none."""
    critical = gpu("rigwatch_gpu_xid_errors_total", 'critical="true"')
    return f"sum by ({by}) ({critical})\nor\nmax by ({by}) ({gpu('rigwatch_gpu_info')}) * 0"


def volatile_ecc(kind: str) -> str:
    return gpu("rigwatch_gpu_ecc_errors_total", f'type="{kind}", scope="volatile"')


HEADROOM = card_pair(
    "rigwatch_gpu_temperature_slowdown_threshold_celsius", "-", "rigwatch_gpu_temperature_celsius"
)
POWER_OF_LIMIT = card_pair("rigwatch_gpu_power_watts", "/", "rigwatch_gpu_power_limit_watts")
MEMORY_USED = card_pair("rigwatch_gpu_memory_used_bytes", "/", "rigwatch_gpu_memory_total_bytes")

# Idle CPU seconds per second, per core: the base of every CPU-busy figure.
CPU_IDLE = rate("rigwatch_host_cpu_seconds_total", f'{HOST}, mode="idle"')
CPU_BUSY_BY_CORE = "1 - " + CPU_IDLE
CPU_BUSY = f"1 - avg by (rig, instance) ({CPU_IDLE})"
CPU_COUNT = (
    "count by (rig, instance) (count by (rig, instance, cpu) "
    f"({host('rigwatch_host_cpu_seconds_total')}))"
)
HOTTEST_SENSOR = f"max by (rig, instance) ({host('rigwatch_host_temperature_celsius')})"
UPTIME = f"time() - {host('rigwatch_host_boot_time_seconds')}"
FILESYSTEM_USED = (
    f"1 - {host('rigwatch_host_filesystem_avail_bytes', PSEUDO_FS)}"
    f" / {host('rigwatch_host_filesystem_size_bytes', PSEUDO_FS)}"
)
