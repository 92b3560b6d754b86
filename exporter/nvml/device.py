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
    # The card's identity beyond its name (serial, VBIOS, board part number, InfoROM versions,
    # compute capability): label values of rigwatch_gpu_identity_info, "" where unknown.
    identity: dict[str, str] = field(default_factory=dict)
    # Power limits the card allows and ships with, in watts.
    power_limits_watts: dict[str, float] = field(default_factory=dict)  # default, min, max
    # Application clocks (current setting and default) in hertz, by clock.
    applications_clocks_hertz: dict[tuple[str, str], float] = field(default_factory=dict)
    # ECC and MIG mode, current and pending (takes effect at the next reset): 1 or 0.
    modes: dict[tuple[str, str], int] = field(default_factory=dict)
    # NVLink links the card answers for (0 without NVLink).
    nvlink_count: int = 0
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
        _describe_more(nv, calls, gpu)
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


# rigwatch_gpu_identity_info's labels: (label, NVML function, its arguments as constant names).
IDENTITY_READS = (
    ("serial", "nvmlDeviceGetSerial", ()),
    ("vbios_version", "nvmlDeviceGetVbiosVersion", ()),
    ("board_part_number", "nvmlDeviceGetBoardPartNumber", ()),
    ("inforom_image_version", "nvmlDeviceGetInforomImageVersion", ()),
    ("inforom_oem_version", "nvmlDeviceGetInforomVersion", ("NVML_INFOROM_OEM",)),
    ("inforom_ecc_version", "nvmlDeviceGetInforomVersion", ("NVML_INFOROM_ECC",)),
)
# The most NVLink links a card has (NVML_NVLINK_MAX_LINKS).
NVLINK_MAX_LINKS = 18


def _describe_more(nv: Any, calls: FieldCalls, gpu: Gpu) -> None:
    """The static facts people coming from dcgm-exporter and nvidia_gpu_exporter expect, read
    once per initialisation: several cost a millisecond each on a real driver (application
    clocks ~1 ms, MIG/ECC mode ~0.15 ms on an H200)."""
    device = gpu.device
    call = calls.call
    for label, function, arg_names in IDENTITY_READS:
        args = [getattr(nv, name) for name in arg_names]
        what = f"{function}({', '.join(n.removeprefix('NVML_') for n in arg_names)})"
        value = call(gpu, what if arg_names else function, getattr(nv, function), *args)
        device.identity[label] = text(value) if value is not None else ""
    capability = call(
        gpu, "nvmlDeviceGetCudaComputeCapability", nv.nvmlDeviceGetCudaComputeCapability
    )
    device.identity["compute_capability"] = (
        f"{capability[0]}.{capability[1]}" if capability is not None else ""
    )
    default = call(
        gpu,
        "nvmlDeviceGetPowerManagementDefaultLimit",
        nv.nvmlDeviceGetPowerManagementDefaultLimit,
    )
    limits = call(
        gpu,
        "nvmlDeviceGetPowerManagementLimitConstraints",
        nv.nvmlDeviceGetPowerManagementLimitConstraints,
    )
    for name, milliwatts in (
        ("default", default),
        ("min", limits[0] if limits is not None else None),
        ("max", limits[1] if limits is not None else None),
    ):
        if _static_ok(calls, gpu, f"power limit {name}", milliwatts):
            device.power_limits_watts[name] = milliwatts / 1000
    for kind, function in (
        ("current", "nvmlDeviceGetApplicationsClock"),
        ("default", "nvmlDeviceGetDefaultApplicationsClock"),
    ):
        for clock, clock_type in (("graphics", 0), ("memory", 2)):
            what = f"{function}({clock})"
            mhz = call(gpu, what, getattr(nv, function), clock_type)
            if _static_ok(calls, gpu, what, mhz):
                device.applications_clocks_hertz[kind, clock] = mhz * 1e6
    for mode, function in (("ecc", "nvmlDeviceGetEccMode"), ("mig", "nvmlDeviceGetMigMode")):
        state = call(gpu, function, getattr(nv, function))
        if state is not None:
            device.modes[mode, "current"] = 1 if state[0] else 0
            device.modes[mode, "pending"] = 1 if state[1] else 0
    # NVLink: the links that answer, from link 0 up (a card without NVLink refuses link 0).
    get_state = getattr(nv, "nvmlDeviceGetNvLinkState", None)
    for link in range(NVLINK_MAX_LINKS if get_state is not None else 0):
        try:
            get_state(device.handle, link)
        except nv.NVMLError:
            break
        device.nvlink_count = link + 1


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
