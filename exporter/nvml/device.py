"""The device model: a card as NVML knows it after one initialisation (handle, identity, static
facts), the record that keeps a card across re-initialisations, and reading those facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.nvml.errors import FieldCalls, GpuLost, plausible
from exporter.pci.bus import normalise_bus_id

CLOCK_TYPES = (("graphics", 0), ("sm", 1), ("memory", 2), ("video", 3))
# nvmlPstates_t: 0..15 are P0..P15; NVML_PSTATE_UNKNOWN (32) means no P-state.
PSTATE_MAX = 15
# The most fans one card has; a larger count is a bad answer, not a card with 4e9 fans.
FAN_COUNT_MAX = 16


@dataclass(eq=False)
class Device:
    """What one NVML initialisation knows about a card. Built whole at each (re)initialisation
    and replaced whole by the next one, never updated field by field; only `unavailable` grows
    while it is current."""

    handle: Any
    index: str
    name: str = ""
    pci_bus_id: str = ""
    slowdown_celsius: float | None = None
    shutdown_celsius: float | None = None
    memory_max_celsius: float | None = None
    max_clocks_hertz: dict[str, float] = field(default_factory=dict)
    max_pcie_generation: int | None = None
    max_pcie_width: int | None = None
    fan_count: int | None = None
    # Functions that answered NOT_SUPPORTED/NO_PERMISSION: not called again until re-init.
    unavailable: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Gpu:
    """One card seen since start, by uuid. Kept (with present=False) when it disappears, so its
    identity series stay; `device` is the latest initialisation's view of it."""

    uuid: str
    device: Device
    present: bool = True
    lost: bool = False

    @property
    def up(self) -> bool:
        return self.present and not self.lost


def describe(nv: Any, calls: FieldCalls, uuid: str, index: int, handle: Any) -> Gpu:
    """The card at index with its identity and static facts, read once per initialisation;
    lost=True when it answers GPU_IS_LOST meanwhile."""
    device = Device(handle=handle, index=str(index))
    gpu = Gpu(uuid=uuid, device=device)
    call = calls.call
    try:
        device.name = text(call(gpu, "nvmlDeviceGetName", nv.nvmlDeviceGetName) or "")
        pci = call(gpu, "nvmlDeviceGetPciInfo", nv.nvmlDeviceGetPciInfo)
        device.pci_bus_id = normalise_bus_id(text(pci.busId)) if pci is not None else ""
        device.shutdown_celsius = call(
            gpu,
            "nvmlDeviceGetTemperatureThreshold(SHUTDOWN)",
            nv.nvmlDeviceGetTemperatureThreshold,
            nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
        )
        device.slowdown_celsius = call(
            gpu,
            "nvmlDeviceGetTemperatureThreshold(SLOWDOWN)",
            nv.nvmlDeviceGetTemperatureThreshold,
            nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
        )
        device.memory_max_celsius = call(
            gpu,
            "nvmlDeviceGetTemperatureThreshold(MEM_MAX)",
            nv.nvmlDeviceGetTemperatureThreshold,
            nv.NVML_TEMPERATURE_THRESHOLD_MEM_MAX,
        )
        for clock, clock_type in CLOCK_TYPES:
            what = f"nvmlDeviceGetMaxClockInfo({clock})"
            mhz = call(gpu, what, nv.nvmlDeviceGetMaxClockInfo, clock_type)
            if _static_ok(calls, gpu, what, mhz):
                device.max_clocks_hertz[clock] = mhz * 1e6
        device.max_pcie_generation = call(
            gpu, "nvmlDeviceGetMaxPcieLinkGeneration", nv.nvmlDeviceGetMaxPcieLinkGeneration
        )
        device.max_pcie_width = call(
            gpu, "nvmlDeviceGetMaxPcieLinkWidth", nv.nvmlDeviceGetMaxPcieLinkWidth
        )
        device.fan_count = call(gpu, "nvmlDeviceGetNumFans", nv.nvmlDeviceGetNumFans)
    except GpuLost:
        gpu.lost = True
    # A threshold, maximum or count of 0 is a card that does not really report it: a 0 °C
    # slowdown threshold would make every temperature alert fire.
    for attribute, what in (
        ("slowdown_celsius", "nvmlDeviceGetTemperatureThreshold(SLOWDOWN)"),
        ("shutdown_celsius", "nvmlDeviceGetTemperatureThreshold(SHUTDOWN)"),
        ("memory_max_celsius", "nvmlDeviceGetTemperatureThreshold(MEM_MAX)"),
        ("max_pcie_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),
        ("max_pcie_width", "nvmlDeviceGetMaxPcieLinkWidth"),
    ):
        if not _static_ok(calls, gpu, what, getattr(device, attribute)):
            setattr(device, attribute, None)
    if device.fan_count is not None and not 0 <= device.fan_count <= FAN_COUNT_MAX:
        calls.log_implausible(gpu, "nvmlDeviceGetNumFans", device.fan_count)
        device.fan_count = None
    return gpu


def _static_ok(calls: FieldCalls, gpu: Gpu, what: str, value: Any) -> bool:
    """Whether a static fact read at init is usable (present, positive, not a sentinel)."""
    if value is None:
        return False
    if value > 0 and plausible(value):
        return True
    calls.log_implausible(gpu, what, value)
    return False


def text(value: Any) -> str:
    """NVML strings arrive as bytes from older pynvml releases, str from newer ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
