"""The `gpu` collector: one set of series per card from NVML, plus NVML's own state.

Each card is its own unit of work, so a card whose NVML calls hang costs only that card's
series (and reads rigwatch_gpu_up 0) while the others keep reporting.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.metrics_core import Metric

from exporter.collectors.percard import CardLabels, PerCardCollector
from exporter.families import Sample, build_families, specs
from exporter.nvml.device import (
    CLOCK_TYPES,
    FAN_COUNT_MAX,
    NVLINK_MAX_LINKS,
    PSTATE_MAX,
    Device,
    Gpu,
)
from exporter.nvml.errors import NOT_AVAILABLE_VALUES, plausible
from exporter.nvml.session import NvmlSession
from exporter.scrape import UnitOutcome
from exporter.settings import Settings

FAMILIES = specs(
    ("rigwatch_nvml_up", "gauge", "1 when NVML is loaded and initialised."),
    ("rigwatch_driver_info", "gauge", "NVIDIA driver and CUDA driver API versions; always 1."),
    ("rigwatch_nvml_devices", "gauge", "GPUs NVML counts, opened or not."),
    ("rigwatch_gpu_info", "gauge", "Identity of every GPU seen since start; always 1."),
    ("rigwatch_gpu_up", "gauge", "1 when the GPU answered this scrape, 0 when lost, gone or hung."),
    (
        "rigwatch_gpu_open_failure_info",
        "gauge",
        "A GPU NVML counts but cannot open: its index, bus id where known, and NVML's error; 1.",
    ),
    ("rigwatch_gpu_temperature_celsius", "gauge", "GPU core temperature."),
    ("rigwatch_gpu_memory_temperature_celsius", "gauge", "GPU memory (HBM/GDDR) temperature."),
    (
        "rigwatch_gpu_temperature_slowdown_threshold_celsius",
        "gauge",
        "Temperature at which the card starts slowing itself down.",
    ),
    (
        "rigwatch_gpu_temperature_shutdown_threshold_celsius",
        "gauge",
        "Temperature at which the card shuts down.",
    ),
    (
        "rigwatch_gpu_memory_temperature_threshold_celsius",
        "gauge",
        "Highest memory temperature the card allows before it slows down.",
    ),
    (
        "rigwatch_gpu_fan_speed_ratio",
        "gauge",
        "Fan speed the card asks for, as a fraction of its rated maximum (can exceed 1).",
    ),
    ("rigwatch_gpu_power_watts", "gauge", "Power draw."),
    ("rigwatch_gpu_power_limit_watts", "gauge", "Enforced power limit."),
    ("rigwatch_gpu_energy_joules_total", "counter", "Energy used since the driver was loaded."),
    ("rigwatch_gpu_utilization_ratio", "gauge", "Fraction of time a kernel was running (0-1)."),
    (
        "rigwatch_gpu_memory_utilization_ratio",
        "gauge",
        "Fraction of time device memory was read or written (0-1).",
    ),
    ("rigwatch_gpu_encoder_utilization_ratio", "gauge", "Video encoder utilisation (0-1)."),
    ("rigwatch_gpu_decoder_utilization_ratio", "gauge", "Video decoder utilisation (0-1)."),
    ("rigwatch_gpu_memory_total_bytes", "gauge", "Installed device memory."),
    (
        "rigwatch_gpu_memory_used_bytes",
        "gauge",
        "Device memory in use by processes and contexts (the driver's reserve not included).",
    ),
    ("rigwatch_gpu_memory_reserved_bytes", "gauge", "Device memory the driver reserves."),
    ("rigwatch_gpu_clock_hertz", "gauge", "Current clock frequency."),
    ("rigwatch_gpu_clock_max_hertz", "gauge", "Maximum clock frequency."),
    ("rigwatch_gpu_pstate", "gauge", "Performance state (0 = P0, fastest; 15 = slowest)."),
    (
        "rigwatch_gpu_throttle_reason_active",
        "gauge",
        "1 while this clock event (throttle) reason holds the clocks down.",
    ),
    ("rigwatch_gpu_pcie_link_generation", "gauge", "Current PCIe link generation."),
    ("rigwatch_gpu_pcie_link_max_generation", "gauge", "Maximum PCIe link generation."),
    ("rigwatch_gpu_pcie_link_width", "gauge", "Current PCIe link width in lanes."),
    ("rigwatch_gpu_pcie_link_max_width", "gauge", "Maximum PCIe link width in lanes."),
    ("rigwatch_gpu_pcie_replay_errors_total", "counter", "PCIe replays (link-level errors)."),
    (
        "rigwatch_gpu_ecc_errors_total",
        "counter",
        "ECC memory errors; scope volatile = since driver load, aggregate = lifetime.",
    ),
    ("rigwatch_gpu_remapped_rows", "gauge", "Memory rows remapped, by error type."),
    ("rigwatch_gpu_remapped_rows_pending", "gauge", "1 when a row remap waits for a GPU reset."),
    ("rigwatch_gpu_remapped_rows_failure", "gauge", "1 when a row remap failed."),
    (
        "rigwatch_gpu_identity_info",
        "gauge",
        "The card's serial, VBIOS, board part number, InfoROM versions and compute capability "
        "(empty where the card does not say); always 1.",
    ),
    ("rigwatch_gpu_power_default_limit_watts", "gauge", "Power limit the card ships with."),
    ("rigwatch_gpu_power_min_limit_watts", "gauge", "Lowest power limit the card accepts."),
    ("rigwatch_gpu_power_max_limit_watts", "gauge", "Highest power limit the card accepts."),
    (
        "rigwatch_gpu_applications_clock_hertz",
        "gauge",
        "Application clock setting (as of the last NVML initialisation).",
    ),
    (
        "rigwatch_gpu_applications_clock_default_hertz",
        "gauge",
        "Default application clock.",
    ),
    (
        "rigwatch_gpu_ecc_mode",
        "gauge",
        "1 when ECC is on: state current, or pending (from the next reset).",
    ),
    ("rigwatch_gpu_mig_mode", "gauge", "1 when MIG is on: state current, or pending."),
    ("rigwatch_gpu_persistence_mode", "gauge", "1 when persistence mode is on."),
    ("rigwatch_gpu_compute_mode", "gauge", "The card's compute mode, named in `mode`; always 1."),
    (
        "rigwatch_gpu_retired_pages",
        "gauge",
        "Memory pages retired, by cause (cards before Ampere; newer ones remap rows).",
    ),
    ("rigwatch_gpu_retired_pages_pending", "gauge", "1 when a page waits for the next reset."),
    ("rigwatch_gpu_encoder_sessions", "gauge", "Active video encoder sessions."),
    ("rigwatch_gpu_encoder_fps", "gauge", "Average frames per second over the encoder sessions."),
    (
        "rigwatch_gpu_encoder_latency_seconds",
        "gauge",
        "Average encode latency over the encoder sessions.",
    ),
    ("rigwatch_gpu_nvlink_up", "gauge", "1 when the NVLink link is active."),
    (
        "rigwatch_gpu_nvlink_errors_total",
        "counter",
        "NVLink errors by link and type (replay, recovery, crc_flit, crc_data).",
    ),
    (
        "rigwatch_gpu_recovery_action",
        "gauge",
        "What the driver asks for to recover the card (0 none, 1 GPU reset, 2 node reboot, "
        "3 drain P2P, 4 drain and reset, 6 bus reset, 7 system reboot), named in `action`.",
    ),
)

# nvmlDeviceGpuRecoveryAction_t, as NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (field 230) answers it.
RECOVERY_ACTION_FIELD = 230
RECOVERY_ACTIONS = {
    0: "none",
    1: "gpu_reset",
    2: "node_reboot",
    3: "drain_p2p",
    4: "drain_and_reset",
    5: "recover_imex_domain",
    6: "bus_reset",
    7: "system_reboot",
}
_ACTION_LABELS = {code: (("action", name),) for code, name in RECOVERY_ACTIONS.items()}

THROTTLE_REASONS = (
    ("gpu_idle", 0x1),
    ("applications_clocks", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal", 0x20),
    ("hw_thermal", 0x40),
    ("hw_power_brake", 0x80),
    ("display_clocks", 0x100),
)

_ULL_MAX = 0xFFFFFFFFFFFFFFFF

# Extra labels as the tuples CardLabels.with_extra() takes, built once.
_FAN_LABELS = tuple((("fan", str(fan)),) for fan in range(FAN_COUNT_MAX + 1))
_CLOCK_LABELS = {clock: (("clock", clock),) for clock, _ in CLOCK_TYPES}
_REASON_LABELS = tuple(((("reason", reason),), bit) for reason, bit in THROTTLE_REASONS)
_ECC_LABELS = {
    (error_type, scope): (("type", error_type), ("scope", scope))
    for error_type in ("corrected", "uncorrected")
    for scope in ("volatile", "aggregate")
}
_MODE_STATE_LABELS = {state: (("state", state),) for state in ("current", "pending")}
# nvmlComputeMode_t
_COMPUTE_MODE_LABELS = {
    code: (("mode", name),)
    for code, name in enumerate(("default", "exclusive_thread", "prohibited", "exclusive_process"))
}
_RETIRED_LABELS = {cause: (("cause", cause),) for cause in ("single_bit_ecc", "double_bit_ecc")}
_LINK_LABELS = tuple((("link", str(link)),) for link in range(NVLINK_MAX_LINKS))
# nvmlNvLinkErrorCounter_t
_NVLINK_COUNTERS = (("replay", 0), ("recovery", 1), ("crc_flit", 2), ("crc_data", 3))
_CORRECTABLE = (("type", "correctable"),)
_UNCORRECTABLE = (("type", "uncorrectable"),)

# nvmlValueType_t -> the union member holding the value
_FIELD_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}


def static_samples(session: NvmlSession, gpu: Gpu, card: CardLabels) -> list[Sample]:
    """Thresholds, maximum clocks and maximum link: read and checked at NVML init, turned into
    samples once per initialisation (the collector keeps them with the Device)."""
    device = gpu.device
    out: list[Sample] = []

    def add(name: str, value: float | None, extra: tuple[tuple[str, str], ...] = ()) -> None:
        if value is None:
            return
        if not plausible(value):
            session.log_implausible(gpu, name, value)
            return
        out.append((name, card.with_extra(extra) if extra else card.base, value))

    add("rigwatch_gpu_temperature_slowdown_threshold_celsius", device.slowdown_celsius)
    add("rigwatch_gpu_temperature_shutdown_threshold_celsius", device.shutdown_celsius)
    add("rigwatch_gpu_memory_temperature_threshold_celsius", device.memory_max_celsius)
    for clock, hertz in device.max_clocks_hertz.items():
        add("rigwatch_gpu_clock_max_hertz", hertz, extra=_CLOCK_LABELS[clock])
    add("rigwatch_gpu_pcie_link_max_generation", device.max_pcie_generation)
    add("rigwatch_gpu_pcie_link_max_width", device.max_pcie_width)
    if device.identity:
        identity = tuple(device.identity.items())
        out.append(("rigwatch_gpu_identity_info", card.with_extra(identity), 1.0))
    for name, watts in device.power_limits_watts.items():
        add(f"rigwatch_gpu_power_{name}_limit_watts", watts)
    for (kind, clock), hertz in device.applications_clocks_hertz.items():
        family = "rigwatch_gpu_applications_clock_" + (
            "hertz" if kind == "current" else "default_hertz"
        )
        add(family, hertz, extra=_CLOCK_LABELS[clock])
    for (mode, state), value in device.modes.items():
        add(f"rigwatch_gpu_{mode}_mode", value, extra=_MODE_STATE_LABELS[state])
    return out


def read_gpu(
    session: NvmlSession, gpu: Gpu, card: CardLabels, static: list[Sample]
) -> list[Sample]:
    """Every per-scrape reading of one card (run through NvmlSession.read_card), after its
    static samples."""
    nv = session.nvml
    call = session.call
    device = gpu.device
    base = card.base
    labels_for = card.with_extra
    out: list[Sample] = static[:]

    def add(
        name: str,
        raw: float | None,
        per: float = 1,
        times: float = 1,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # raw is NVML's own number (milliwatts, percent, MHz): its "not available" values are
        # recognised before the conversion to base units and never become a sample.
        if raw is None:
            return
        # plausible(), inlined: this runs ~45 times per card per scrape.
        if not 0 <= raw < _ULL_MAX or raw in NOT_AVAILABLE_VALUES:
            session.log_implausible(gpu, name, raw)
            return
        value = raw / per if per != 1 else raw
        if times != 1:
            value *= times
        out.append((name, labels_for(extra) if extra else base, value))

    add(
        "rigwatch_gpu_temperature_celsius",
        call(gpu, "nvmlDeviceGetTemperature", nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
    )
    add("rigwatch_gpu_memory_temperature_celsius", _memory_temperature(session, gpu))

    if device.fan_count is None:
        percent = call(gpu, "nvmlDeviceGetFanSpeed", nv.nvmlDeviceGetFanSpeed)
        if percent is not None:
            add("rigwatch_gpu_fan_speed_ratio", percent, 100, extra=_FAN_LABELS[0])
    else:
        for fan in range(device.fan_count):
            percent = call(
                gpu, f"nvmlDeviceGetFanSpeed_v2({fan})", nv.nvmlDeviceGetFanSpeed_v2, fan
            )
            if percent is not None:
                add("rigwatch_gpu_fan_speed_ratio", percent, 100, extra=_FAN_LABELS[fan])

    milliwatts = call(gpu, "nvmlDeviceGetPowerUsage", nv.nvmlDeviceGetPowerUsage)
    add("rigwatch_gpu_power_watts", milliwatts, 1000)
    milliwatts = call(gpu, "nvmlDeviceGetEnforcedPowerLimit", nv.nvmlDeviceGetEnforcedPowerLimit)
    add("rigwatch_gpu_power_limit_watts", milliwatts, 1000)
    millijoules = call(
        gpu, "nvmlDeviceGetTotalEnergyConsumption", nv.nvmlDeviceGetTotalEnergyConsumption
    )
    add("rigwatch_gpu_energy_joules_total", millijoules, 1000)

    rates = call(gpu, "nvmlDeviceGetUtilizationRates", nv.nvmlDeviceGetUtilizationRates)
    if rates is not None:
        add("rigwatch_gpu_utilization_ratio", rates.gpu, 100)
        add("rigwatch_gpu_memory_utilization_ratio", rates.memory, 100)
    encoder = call(gpu, "nvmlDeviceGetEncoderUtilization", nv.nvmlDeviceGetEncoderUtilization)
    if encoder is not None:
        add("rigwatch_gpu_encoder_utilization_ratio", encoder[0], 100)
    decoder = call(gpu, "nvmlDeviceGetDecoderUtilization", nv.nvmlDeviceGetDecoderUtilization)
    if decoder is not None:
        add("rigwatch_gpu_decoder_utilization_ratio", decoder[0], 100)

    # The second version tells the memory the driver reserves apart from what is in use, as
    # nvidia-smi shows it; the first counts the reserve as used (615 MiB on an idle H200).
    memory = call(gpu, "nvmlDeviceGetMemoryInfo_v2", nv.nvmlDeviceGetMemoryInfo, nv.nvmlMemory_v2)
    if memory is not None:
        add("rigwatch_gpu_memory_total_bytes", memory.total)
        add("rigwatch_gpu_memory_used_bytes", memory.used)
        add("rigwatch_gpu_memory_reserved_bytes", memory.reserved)
    elif "nvmlDeviceGetMemoryInfo_v2" in device.unavailable:  # a driver without it
        memory = call(gpu, "nvmlDeviceGetMemoryInfo", nv.nvmlDeviceGetMemoryInfo)
        if memory is not None:
            add("rigwatch_gpu_memory_total_bytes", memory.total)
            add("rigwatch_gpu_memory_used_bytes", memory.used)

    for clock, clock_type in CLOCK_TYPES:
        mhz = call(gpu, f"nvmlDeviceGetClockInfo({clock})", nv.nvmlDeviceGetClockInfo, clock_type)
        if mhz is not None:
            add("rigwatch_gpu_clock_hertz", mhz, times=1e6, extra=_CLOCK_LABELS[clock])

    pstate = call(gpu, "nvmlDeviceGetPerformanceState", nv.nvmlDeviceGetPerformanceState)
    if pstate is not None and pstate > PSTATE_MAX:  # NVML_PSTATE_UNKNOWN
        session.log_implausible(gpu, "rigwatch_gpu_pstate", pstate)
        pstate = None
    add("rigwatch_gpu_pstate", pstate)

    reasons = call(
        gpu, "nvmlDeviceGetCurrentClocksEventReasons", nv.nvmlDeviceGetCurrentClocksEventReasons
    )
    if reasons is None and "nvmlDeviceGetCurrentClocksEventReasons" in device.unavailable:
        # Drivers before 535 only have the older name for the same bitmask.
        reasons = call(
            gpu,
            "nvmlDeviceGetCurrentClocksThrottleReasons",
            nv.nvmlDeviceGetCurrentClocksThrottleReasons,
        )
    if reasons is not None:
        for extra, bit in _REASON_LABELS:
            add("rigwatch_gpu_throttle_reason_active", 1 if reasons & bit else 0, extra=extra)

    add(
        "rigwatch_gpu_pcie_link_generation",
        call(gpu, "nvmlDeviceGetCurrPcieLinkGeneration", nv.nvmlDeviceGetCurrPcieLinkGeneration),
    )
    add(
        "rigwatch_gpu_pcie_link_width",
        call(gpu, "nvmlDeviceGetCurrPcieLinkWidth", nv.nvmlDeviceGetCurrPcieLinkWidth),
    )
    add(
        "rigwatch_gpu_pcie_replay_errors_total",
        call(gpu, "nvmlDeviceGetPcieReplayCounter", nv.nvmlDeviceGetPcieReplayCounter),
    )

    for error_type, error_code in (
        ("corrected", nv.NVML_MEMORY_ERROR_TYPE_CORRECTED),
        ("uncorrected", nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
    ):
        for scope, counter in (
            ("volatile", nv.NVML_VOLATILE_ECC),
            ("aggregate", nv.NVML_AGGREGATE_ECC),
        ):
            # One "what" for all four: a card without ECC answers NOT_SUPPORTED to each, and
            # that is one fact worth one log line.
            count = call(
                gpu,
                "nvmlDeviceGetTotalEccErrors",
                nv.nvmlDeviceGetTotalEccErrors,
                error_code,
                counter,
            )
            add("rigwatch_gpu_ecc_errors_total", count, extra=_ECC_LABELS[error_type, scope])

    rows = call(gpu, "nvmlDeviceGetRemappedRows", nv.nvmlDeviceGetRemappedRows)
    if rows is not None:
        correctable, uncorrectable, pending, failure = rows
        add("rigwatch_gpu_remapped_rows", correctable, extra=_CORRECTABLE)
        add("rigwatch_gpu_remapped_rows", uncorrectable, extra=_UNCORRECTABLE)
        add("rigwatch_gpu_remapped_rows_pending", 1 if pending else 0)
        add("rigwatch_gpu_remapped_rows_failure", 1 if failure else 0)

    _modes_and_health(session, gpu, add)

    action = _field(
        session,
        gpu,
        "nvmlDeviceGetFieldValues(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)",
        RECOVERY_ACTION_FIELD,
    )
    if action is not None:
        if action in _ACTION_LABELS:
            add("rigwatch_gpu_recovery_action", action, extra=_ACTION_LABELS[action])
        else:
            session.log_implausible(gpu, "rigwatch_gpu_recovery_action", action)
    return out


def _modes_and_health(session: NvmlSession, gpu: Gpu, add: Callable[..., None]) -> None:
    """Persistence and compute mode, retired pages, encoder statistics and NVLink: read every
    scrape, each a few microseconds on a real driver, refused once by cards without them."""
    nv = session.nvml
    call = session.call
    persistence = call(gpu, "nvmlDeviceGetPersistenceMode", nv.nvmlDeviceGetPersistenceMode)
    if persistence is not None:
        add("rigwatch_gpu_persistence_mode", 1 if persistence else 0)
    mode = call(gpu, "nvmlDeviceGetComputeMode", nv.nvmlDeviceGetComputeMode)
    if mode in _COMPUTE_MODE_LABELS:
        add("rigwatch_gpu_compute_mode", 1, extra=_COMPUTE_MODE_LABELS[mode])
    elif mode is not None:
        session.log_implausible(gpu, "rigwatch_gpu_compute_mode", mode)
    for cause, code in (("single_bit_ecc", 0), ("double_bit_ecc", 1)):
        pages = call(gpu, "nvmlDeviceGetRetiredPages", nv.nvmlDeviceGetRetiredPages, code)
        if pages is not None:
            add("rigwatch_gpu_retired_pages", len(pages), extra=_RETIRED_LABELS[cause])
    pending = call(
        gpu, "nvmlDeviceGetRetiredPagesPendingStatus", nv.nvmlDeviceGetRetiredPagesPendingStatus
    )
    if pending is not None:
        add("rigwatch_gpu_retired_pages_pending", 1 if pending else 0)
    stats = call(gpu, "nvmlDeviceGetEncoderStats", nv.nvmlDeviceGetEncoderStats)
    if stats is not None:
        sessions, fps, latency_us = stats
        add("rigwatch_gpu_encoder_sessions", sessions)
        if sessions:
            add("rigwatch_gpu_encoder_fps", fps)
            add("rigwatch_gpu_encoder_latency_seconds", latency_us, 1e6)
    for link in range(gpu.device.nvlink_count):
        extra = _LINK_LABELS[link]
        active = call(gpu, "nvmlDeviceGetNvLinkState", nv.nvmlDeviceGetNvLinkState, link)
        if active is not None:
            add("rigwatch_gpu_nvlink_up", 1 if active else 0, extra=extra)
        for kind, counter in _NVLINK_COUNTERS:
            count = call(
                gpu,
                "nvmlDeviceGetNvLinkErrorCounter",
                nv.nvmlDeviceGetNvLinkErrorCounter,
                link,
                counter,
            )
            add("rigwatch_gpu_nvlink_errors_total", count, extra=(*extra, ("type", kind)))


def _memory_temperature(session: NvmlSession, gpu: Gpu) -> float | None:
    what = "nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)"
    return _field(session, gpu, what, session.nvml.NVML_FI_DEV_MEMORY_TEMP)


def _field(session: NvmlSession, gpu: Gpu, what: str, field_id: int) -> float | None:
    """One NVML field value of the card, or None (unsupported fields are asked once per init)."""
    nv = session.nvml
    values = session.call(gpu, what, nv.nvmlDeviceGetFieldValues, [field_id])
    if values is None:
        return None
    value = values[0]
    if value.nvmlReturn != 0:
        # The call succeeded but the field itself failed: same policy as a failed call.
        return session.calls.fail_like(gpu, what, value.nvmlReturn)
    member = _FIELD_VALUE_MEMBERS.get(value.valueType)
    return None if member is None else getattr(value.value, member)


class GpuCollector(PerCardCollector):
    """Per-card NVML readings; NVML's state and identity series come from the session."""

    name = "gpu"
    families = FAMILIES

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        super().__init__(settings, session)
        # Each card's static samples, with the Device they were built for.
        self._static: dict[str, tuple[Device, list[Sample]]] = {}

    def read_card(self, gpu: Gpu) -> list[Sample]:
        device = gpu.device
        card = self.labels.get(gpu)
        kept = self._static.get(gpu.uuid)
        if kept is None or kept[0] is not device:
            kept = self._static[gpu.uuid] = (device, static_samples(self.session, gpu, card))
        return read_gpu(self.session, gpu, card, kept[1])

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        session = self.session
        by_key = {o.key: o for o in outcomes}
        samples: list[Sample] = [("rigwatch_nvml_up", {}, 1.0 if session.up else 0.0)]
        if session.up and session.device_count is not None:
            samples.append(("rigwatch_nvml_devices", {}, session.device_count))
        if session.up and session.driver_version:
            samples.append(
                (
                    "rigwatch_driver_info",
                    {
                        "driver_version": session.driver_version,
                        "cuda_version": session.cuda_version,
                    },
                    1.0,
                )
            )
        for gpu in session.gpus():
            card = self.labels.get(gpu)
            device = card.device
            identity = (("name", device.name), ("pci_bus_id", device.pci_bus_id))
            samples.append(("rigwatch_gpu_info", card.with_extra(identity), 1.0))
            outcome = by_key.get(f"gpu/{gpu.uuid}")
            answered = outcome is not None and outcome.done and outcome.value is not None
            samples.append(("rigwatch_gpu_up", card.base, 1.0 if answered else 0.0))
            if answered:
                samples.extend(outcome.value)
        samples.extend(self._unopened_samples())
        return build_families(FAMILIES, samples), True

    def _unopened_samples(self) -> list[Sample]:
        """Cards NVML counts but cannot open: rigwatch_gpu_up 0 under their index (unless a card
        seen before at that index already reads 0 under its uuid) and why."""
        session = self.session
        unopened = session.unopened
        if not unopened:
            return []
        known_down = {g.device.index for g in session.gpus() if not g.present}
        samples: list[Sample] = []
        for card in unopened:
            if card.index not in known_down:
                samples.append(("rigwatch_gpu_up", {"gpu": card.index, "uuid": ""}, 0.0))
            labels = {"gpu": card.index, "pci_bus_id": card.pci_bus_id, "reason": card.reason}
            samples.append(("rigwatch_gpu_open_failure_info", labels, 1.0))
        return samples
