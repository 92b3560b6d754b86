"""Panels of the PCI bus's own view (the exporter's pci collector): every card the bus shows
with its state and AER counts on the rig overview, and a card's AER rate and sysfs link beside
NVML's on the GPU detail dashboard."""

from __future__ import annotations

from grafana_foundation_sdk.builders import table, timeseries

from .panels import NOT_SUPPORTED, Column, Query, table_panel, timeseries_panel
from .queries import GPU, HOST, host

BUS_KEY = "job, instance, pci_bus_id"
BUS_BY = "rig, instance, pci_bus_id"
BUS = host("rigwatch_pci_gpu_info")
# The card's NVML index joined onto a bus series, for the GPU detail dashboard.
TO_CARD = f"* on ({BUS_KEY}) group_left (gpu) rigwatch_gpu_info{{{GPU}}}"

# The card variable's "All" is ".*", so cards NVML cannot open (no rigwatch_gpu_info) match.
NEEDS_RESET = (
    f"max by ({BUS_KEY}) ((rigwatch_gpu_recovery_action{{{GPU}}} > 0)"
    f" * on (job, instance, gpu, uuid) group_left (pci_bus_id) rigwatch_gpu_info{{{GPU}}})"
)
CANNOT_OPEN = f"max by ({BUS_KEY}) (rigwatch_gpu_open_failure_info{{{GPU}}})"
NOT_SERVED = f"max by ({BUS_KEY}) (rigwatch_pci_gpu_nvml_up{{{HOST}}} == 0)"


def _state(name: str, condition: str) -> str:
    return f'label_replace({BUS} and on ({BUS_KEY}) {condition}, "state", "{name}", "", "")'


# Worst state first: `or on (...)` keeps the first state a card matches.
STATE = (
    f"max by ({BUS_BY}, driver, device_id, state) (\n  "
    + f"\n  or on ({BUS_KEY})\n  ".join(
        (
            _state("needs reset or reboot", NEEDS_RESET),
            _state("lost: the driver cannot reach it", CANNOT_OPEN),
            _state("not served by the NVIDIA driver", NOT_SERVED),
            f'label_replace({BUS}, "state", "working", "", "")',
        )
    )
    + "\n)"
)


def _per_bus_card(expr: str) -> str:
    """Per bus address, NaN (shown as not supported) for a card without the series."""
    return f"max by ({BUS_BY}) (\n  {expr}\n  or on ({BUS_KEY})\n  {BUS} * NaN\n)"


def _aer(severity: str) -> str:
    return _per_bus_card(
        f'sum by ({BUS_KEY}, rig) (rigwatch_pci_aer_events_total{{{HOST}, severity="{severity}"}})'
    )


BUS_COLUMNS = [
    Column("bus", "On the bus", "none", STATE, hidden=True),
    Column("aer_correctable", "AER correctable", "short", _aer("correctable")),
    Column("aer_nonfatal", "AER non-fatal", "short", _aer("nonfatal")),
    Column("aer_fatal", "AER fatal", "short", _aer("fatal")),
    Column(
        "link_width", "Link width (bus)", "short", _per_bus_card(host("rigwatch_pci_link_width"))
    ),
    Column(
        "link_max_width",
        "Max width",
        "short",
        _per_bus_card(host("rigwatch_pci_link_max_width")),
    ),
]


def bus_table() -> table.Panel:
    return table_panel(
        "Every card on the PCI bus",
        "short",
        BUS_COLUMNS,
        size=(24, 7),
        description=(
            "Every NVIDIA GPU the kernel lists on the PCI bus, whatever NVML makes of it: "
            "working; lost (NVML counts it but cannot open it); not served by the NVIDIA driver "
            "(not counted, or bound to vfio-pci, nouveau or no driver); needs a reset or reboot "
            "(the driver's recovery verdict). AER counts are PCIe errors on the card's link "
            "since boot (its upstream port's where the card has no AER of its own); "
            f"correctable ones climbing is a riser or cable going bad. '{NOT_SUPPORTED}' means "
            "the kernel exposes no such counter or link file for it."
        ),
    )


def detail_panels() -> list[timeseries.Panel]:
    """The card's AER rate and the bus's view of its link, beside NVML's PCIe panels."""
    return [
        timeseries_panel(
            "PCIe AER errors (bus)",
            "cps",
            [
                Query(
                    "aer",
                    f"sum by (rig, instance, gpu, severity) "
                    f"(rate(rigwatch_pci_aer_events_total{{{HOST}}}[$__rate_interval]) {TO_CARD})",
                    "GPU {{gpu}} {{severity}}",
                )
            ],
            size=(12, 8),
            minimum=0,
            description=(
                "AER errors per second on the card's PCIe link, as the kernel counts them "
                "(the card's own counters, or its upstream port's). Correctable errors that "
                "keep coming are a marginal riser or cable."
            ),
        ),
        timeseries_panel(
            "PCIe link (bus) against its maximum",
            "short",
            [
                Query(
                    "bus_width",
                    f"max by (rig, instance, gpu) (rigwatch_pci_link_width{{{HOST}}} {TO_CARD})",
                    "GPU {{gpu}} width (bus)",
                ),
                Query(
                    "bus_max_width",
                    f"max by (rig, instance, gpu) "
                    f"(rigwatch_pci_link_max_width{{{HOST}}} {TO_CARD})",
                    "GPU {{gpu}} max width (bus)",
                ),
                Query(
                    "bus_speed",
                    f"max by (rig, instance, gpu) "
                    f"(rigwatch_pci_link_speed_transfers_per_second{{{HOST}}} {TO_CARD}) / 1e9",
                    "GPU {{gpu}} GT/s (bus)",
                ),
            ],
            size=(12, 8),
            minimum=0,
            description=(
                "The link as sysfs reads it from the PCIe registers, independent of the driver: "
                "it shows a riser's narrower or slower link even when NVML cannot read the card."
            ),
        ),
    ]
