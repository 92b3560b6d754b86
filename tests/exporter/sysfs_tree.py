"""A sysfs fixture tree for the `pci` collector: `bus/pci/devices/<addr>` links into
`devices/pci0000:00/<port>/<addr>` as on a real machine, with the kernel's file formats
(vendor/class/device ids, link speed and width, AER counters) and driver links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CORRECTABLE = (
    "RxErr",
    "BadTLP",
    "BadDLLP",
    "Rollover",
    "Timeout",
    "NonFatalErr",
    "CorrIntErr",
    "HeaderOF",
)
UNCORRECTABLE = (
    "Undefined",
    "DLP",
    "SDES",
    "TLP",
    "FCP",
    "CmpltTO",
    "CmpltAbrt",
    "UnxCmplt",
    "RxOF",
    "MalfTLP",
    "ECRC",
    "UnsupReq",
    "ACSViol",
    "UncorrIntErr",
    "BlockedTLP",
    "AtomicOpBlocked",
    "TLPBlockedErr",
    "PoisonTLPBlocked",
)
_TOTALS = {
    "aer_dev_correctable": "TOTAL_ERR_COR",
    "aer_dev_nonfatal": "TOTAL_ERR_NONFATAL",
    "aer_dev_fatal": "TOTAL_ERR_FATAL",
}


def aer_text(filename: str, counts: dict[str, int] | None = None, total: int | None = None) -> str:
    """An aer_dev_* file as the kernel writes it: one `Name count` line per error (a count per
    status bit set), then the TOTAL_ERR_* line (a count per event: one event can set several
    bits, so it is often less than the sum; given, or the sum when not)
    (Documentation/ABI/testing/sysfs-bus-pci-devices-aer-stats)."""
    counts = counts or {}
    names = CORRECTABLE if filename == "aer_dev_correctable" else UNCORRECTABLE
    lines = [f"{name} {counts.get(name, 0)}" for name in names]
    events = sum(counts.values()) if total is None else total
    lines.append(f"{_TOTALS[filename]} {events}")
    return "\n".join(lines) + "\n"


class SysfsTree:
    """A writable fake of /sys for PCI functions; root is what --path.sysfs points at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = root / "bus" / "pci" / "devices"
        self.devices.mkdir(parents=True, exist_ok=True)
        for driver in ("nvidia", "vfio-pci", "nouveau", "snd_hda_intel", "e1000e", "pcieport"):
            (root / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)

    def _dir(self, address: str) -> Path:
        return Path(os.path.realpath(self.devices / address))

    def add_function(
        self,
        address: str,
        *,
        vendor: int = 0x10DE,
        pci_class: int = 0x030000,
        device: int = 0x2684,
        driver: str | None = "nvidia",
        port: str = "0000:00:01.0",
        link: tuple[str, int, str, int] | None = ("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16),
        aer: bool = True,
        port_aer: bool = False,
    ) -> Path:
        """One function below `port` (a root port made on first use); link is (current speed,
        current width, max speed, max width); aer puts the card's own counters, port_aer its
        port's."""
        port_dir = self.root / "devices" / "pci0000:00" / port
        if not port_dir.exists():
            port_dir.mkdir(parents=True)
            self._write_ids(port_dir, 0x8086, 0x060400, 0x1901)
            (self.devices / port).symlink_to(os.path.relpath(port_dir, self.devices))
            (port_dir / "driver").symlink_to(
                os.path.relpath(self.root / "bus/pci/drivers/pcieport", port_dir)
            )
        if port_aer:
            for name in _TOTALS:
                (port_dir / name).write_text(aer_text(name))
        path = port_dir / address
        path.mkdir(parents=True)
        self._write_ids(path, vendor, pci_class, device)
        (self.devices / address).symlink_to(os.path.relpath(path, self.devices))
        if link is not None:
            speed, width, max_speed, max_width = link
            (path / "current_link_speed").write_text(speed + "\n")
            (path / "current_link_width").write_text(f"{width}\n")
            (path / "max_link_speed").write_text(max_speed + "\n")
            (path / "max_link_width").write_text(f"{max_width}\n")
        if aer:
            for name in _TOTALS:
                (path / name).write_text(aer_text(name))
        if driver is not None:
            self.bind(address, driver)
        return path

    @staticmethod
    def _write_ids(path: Path, vendor: int, pci_class: int, device: int) -> None:
        (path / "vendor").write_text(f"0x{vendor:04x}\n")
        (path / "class").write_text(f"0x{pci_class:06x}\n")
        (path / "device").write_text(f"0x{device:04x}\n")

    def bind(self, address: str, driver: str | None) -> None:
        path = self._dir(address)
        link = path / "driver"
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            link.symlink_to(os.path.relpath(self.root / "bus/pci/drivers" / driver, path))

    def set_aer(
        self,
        address: str,
        filename: str,
        counts: dict[str, int],
        port: bool = False,
        total: int | None = None,
    ):
        path = self._dir(address)
        if port:
            path = path.parent
        tmp = path / (filename + ".tmp")
        tmp.write_text(aer_text(filename, counts, total))
        os.replace(tmp, path / filename)

    def set_link(self, address: str, speed: str, width: int) -> None:
        path = self._dir(address)
        (path / "current_link_speed").write_text(speed + "\n")
        (path / "current_link_width").write_text(f"{width}\n")

    def remove(self, address: str) -> None:
        """The function leaves the bus (surprise removal, or `echo 1 > remove`)."""
        path = self._dir(address)
        (self.devices / address).unlink()
        shutil.rmtree(path)

    def make_unreadable(self, address: str, filename: str) -> None:
        """Replace one attribute with something open() cannot read (a directory): tests run as
        root, for whom a chmod 000 file stays readable."""
        path = self._dir(address) / filename
        path.unlink()
        path.mkdir()


def rig_tree(root: Path) -> SysfsTree:
    """The rig the tests use: NVIDIA cards at 0000:01:00.0, 0000:02:00.0 and 0000:03:00.0
    (nvidia driver; the card at 01 has its HDMI audio function beside it), a network card, and
    an NVIDIA card bound to vfio-pci at 0000:0b:00.0 whose link is read through its port."""
    tree = SysfsTree(root)
    tree.add_function(
        "0000:00:1f.6",
        vendor=0x8086,
        pci_class=0x020000,
        device=0x15BC,
        driver="e1000e",
        port="0000:00:1c.0",
        link=None,
        aer=False,
    )
    tree.add_function("0000:01:00.0", port="0000:00:01.0")
    tree.add_function(
        "0000:01:00.1",
        pci_class=0x040300,
        device=0x22BA,
        driver="snd_hda_intel",
        port="0000:00:01.0",
        aer=False,
    )
    tree.add_function("0000:02:00.0", port="0000:00:01.1", aer=False, port_aer=True)
    tree.add_function("0000:03:00.0", port="0000:00:01.2")
    tree.add_function(
        "0000:0b:00.0",
        pci_class=0x030200,
        device=0x20B5,
        driver="vfio-pci",
        port="0000:00:03.1",
        link=("8.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 16),
    )
    return tree
