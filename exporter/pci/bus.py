"""Reading NVIDIA GPU functions from sysfs (`<sysfs>/bus/pci/devices`): which are on the bus,
which driver holds each, its PCIe link and its AER error counters.

What cannot change while a function stays on the bus (vendor, class, device id, maximum link,
where its AER counters live) is read once per bus address; a scrape then reads only the
driver link, the current link and the AER files of the GPU functions.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

from rigwatch.logs import logger
from rigwatch.oncelog import OnceLog

LOG = logger("exporter", "pci")

NVIDIA_VENDOR = 0x10DE
# PCI class codes (base class, subclass): VGA-compatible display and 3D controller. The HDMI
# audio function of a card (0x0403) and its USB-C controller are not GPUs.
GPU_CLASSES = frozenset({0x0300, 0x0302})
AER_SEVERITIES = (
    ("correctable", "aer_dev_correctable"),
    ("nonfatal", "aer_dev_nonfatal"),
    ("fatal", "aer_dev_fatal"),
)
# PCIe has at most 32 lanes; a function that fell off the bus reads its link status register
# as all ones, which the kernel turns into a width of 63.
MAX_LINK_WIDTH = 32

_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def normalise_bus_id(text: str) -> str:
    """One spelling for a PCI address: sysfs's `0000:0b:00.0`. NVML writes `00000000:0B:00.0`
    (and `0000:0B:00.0` in its legacy field); text that is not an address is returned as is."""
    match = _BUS_ID.match(text.strip())
    if match is None:
        return text.strip()
    domain, bus, device, function = match.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def is_bus_id(name: str) -> bool:
    return _BUS_ID.match(name) is not None


@dataclass
class GpuFunction:
    """One NVIDIA GPU function on the bus and what was read about it once."""

    bus_id: str
    path: str  # the device's own directory (the symlink's target)
    device_id: str  # "0x2684"
    max_speed: float | None = None  # transfers per second
    max_width: int | None = None
    # (severity, file path) for the AER counters read each scrape, and whose they are.
    aer_files: list[tuple[str, str]] = field(default_factory=list)
    aer_source: str = ""


@dataclass
class AerCount:
    severity: str
    error: str
    count: int


class PciBus:
    """The NVIDIA GPU functions under <sysfs>/bus/pci/devices, prepared once per address."""

    def __init__(self, sysfs: str) -> None:
        self.devices_dir = os.path.join(sysfs, "bus", "pci", "devices")
        # Every address seen, mapped to its GPU function or None for anything else (a NIC, a
        # bridge, the card's audio function): the bus is listed every scrape, each address
        # classified once.
        self._known: dict[str, GpuFunction | None] = {}
        self._once = OnceLog(LOG)

    def gpus(self) -> list[GpuFunction]:
        """The NVIDIA GPU functions on the bus now, in bus order."""
        try:
            names = os.listdir(self.devices_dir)
        except OSError as err:
            self._log_once(self.devices_dir, f"cannot list the PCI bus: {err}")
            return []
        known = self._known
        present = set(names)
        for gone in [name for name in known if name not in present]:
            del known[gone]
        found = []
        for name in sorted(names):
            if name not in known:
                function = self._classify(name)
                if function is False:
                    continue  # unreadable now: tried again next scrape
                known[name] = function
            function = known[name]
            if function is not None:
                found.append(function)
        return found

    def _classify(self, name: str) -> GpuFunction | None | bool:
        base = os.path.join(self.devices_dir, name)
        try:
            vendor = int(_read(os.path.join(base, "vendor")), 16)
            pci_class = int(_read(os.path.join(base, "class")), 16)
        except (OSError, ValueError) as err:
            self._log_once(name, f"cannot read PCI function {name}: {err}")
            return False
        if vendor != NVIDIA_VENDOR or pci_class >> 8 not in GPU_CLASSES:
            return None
        try:
            device_id = f"0x{int(_read(os.path.join(base, 'device')), 16):04x}"
        except (OSError, ValueError):
            device_id = ""
        path = os.path.realpath(base)
        function = GpuFunction(normalise_bus_id(name), path, device_id)
        function.max_speed = self._speed(os.path.join(path, "max_link_speed"))
        function.max_width = self._width(os.path.join(path, "max_link_width"))
        # The card's own AER counters when it has the capability; otherwise those of the port
        # above it (root port or switch port), which sees the same link's errors.
        for source, directory in (("device", path), ("upstream_port", os.path.dirname(path))):
            if source == "upstream_port" and not is_bus_id(os.path.basename(directory)):
                break
            files = [
                (severity, os.path.join(directory, filename))
                for severity, filename in AER_SEVERITIES
                if os.path.exists(os.path.join(directory, filename))
            ]
            if files:
                function.aer_files = files
                function.aer_source = source
                break
        return function

    def driver(self, function: GpuFunction) -> str:
        """The driver bound to the function (nvidia, vfio-pci, nouveau), or "none"."""
        try:
            return os.path.basename(os.readlink(os.path.join(function.path, "driver")))
        except OSError:
            return "none"

    def link(self, function: GpuFunction) -> tuple[float | None, int | None]:
        """The link's current speed (transfers per second) and width, as the kernel reads them
        from the link status register now."""
        return (
            self._speed(os.path.join(function.path, "current_link_speed")),
            self._width(os.path.join(function.path, "current_link_width")),
        )

    def aer(self, function: GpuFunction) -> list[AerCount]:
        """The AER counters by severity: each error's line, and the kernel's TOTAL_ERR_* line
        as error "TOTAL". They count different things: the kernel adds one to an error's
        counter for every status bit set in an event, and one to the total per event, so the
        per-error counters do not add up to the total (one bad TLP event can also set
        receiver-error and bad-DLLP bits). Rules count events (the totals); the error names
        say what kind."""
        counts: list[AerCount] = []
        for severity, path in function.aer_files:
            try:
                text = _read(path)
            except OSError as err:
                self._log_once(path, f"cannot read {path}: {err}")
                continue
            for line in text.splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                name = "TOTAL" if parts[0].startswith("TOTAL_ERR_") else parts[0]
                try:
                    count = int(parts[1])
                except ValueError:
                    continue
                if count >= 0:
                    counts.append(AerCount(severity, name, count))
        return counts

    def _speed(self, path: str) -> float | None:
        # "16.0 GT/s PCIe" (kernel 5.x on), "8 GT/s" (older), "Unknown" when the link is down.
        text = self._read_link(path)
        if text is None:
            return None
        try:
            gts = float(text.split()[0])
        except (IndexError, ValueError):
            return None
        return gts * 1e9 if gts > 0 else None

    def _width(self, path: str) -> int | None:
        text = self._read_link(path)
        if text is None:
            return None
        try:
            width = int(text.strip().lstrip("x"))
        except ValueError:
            return None
        return width if 0 <= width <= MAX_LINK_WIDTH else None

    def _read_link(self, path: str) -> str | None:
        """A link attribute's text, or None when it cannot be read; errors other than a missing
        file are logged, once a path."""
        try:
            return _read(path)
        except OSError as err:
            if not isinstance(err, FileNotFoundError):
                self._log_once(path, f"cannot read {path}: {err}")
            return None

    def _log_once(self, key: str, message: str) -> None:
        self._once.log(logging.WARNING, (key, message), "%s", message)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def attribute_unopened(
    unopened: list[int], opened: dict[int, str], candidates: list[str]
) -> dict[int, str]:
    """Bus ids for the NVML indices that could not be opened, where the bus allows one answer.

    NVML numbers cards in PCI bus order. candidates are the GPU functions bound to the nvidia
    driver that no opened card claims, sorted; the unopened indices between two opened cards
    take the candidates between those cards' bus ids, in order, when both counts agree."""
    result: dict[int, str] = {}
    ordered = sorted(opened.items())
    for index in sorted(unopened):
        if index in result:
            continue
        low = max((i for i, _ in ordered if i < index), default=None)
        high = min((i for i, _ in ordered if i > index), default=None)
        low_id = opened[low] if low is not None else ""
        high_id = opened[high] if high is not None else "\uffff"
        gap = [i for i in unopened if (low is None or i > low) and (high is None or i < high)]
        between = [c for c in candidates if low_id < c < high_id]
        if len(gap) == len(between):
            result.update(zip(sorted(gap), between, strict=True))
    return result
