"""Every card accounted for: cards NVML counts but cannot open, cards only the PCI bus shows,
their links and AER counters from sysfs, and the driver's recovery verdict."""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from exporter.pci.bus import attribute_unopened, normalise_bus_id
from tests.exporter.scrapes import FAST_RETRY, assert_no_nan, log_lines, scrape
from tests.exporter.sysfs_tree import SysfsTree, rig_tree
from tests.exporter.test_exposition import _promtool_check
from tests.support import make_scenario, running_exporter, wait_until, write_scenario

UUID2 = "GPU-00000002-1111-2222-3333-444444444444"
LOST_BUS_ID = "0000:03:00.0"
VFIO_BUS_ID = "0000:0b:00.0"


def _sysfs_flag(tree: SysfsTree) -> str:
    return f"--path.sysfs={tree.root}"


@contextlib.contextmanager
def _exporter_on_rig(
    scenario_file: Path, tmp_path: Path, scenario: dict, *flags: str
) -> Iterator[tuple]:
    """The exporter on ``scenario`` with the simulated rig's sysfs (rig_tree): tree, proc, base."""
    tree = rig_tree(tmp_path / "sys")
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, _sysfs_flag(tree), *flags) as (proc, base):
        yield tree, proc, base


_REINIT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*NVML \(re\)initialisation #(\d+)$"
)


def _reinit_times(output: str) -> list[float]:
    """When each NVML (re)initialisation began, from the exporter's debug log, in order."""
    times = []
    for line in output.splitlines():
        match = _REINIT_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


def test_bus_ids_get_one_spelling():
    assert normalise_bus_id("00000000:0B:00.0") == "0000:0b:00.0"
    assert normalise_bus_id("0000:0B:00.0") == "0000:0b:00.0"
    assert normalise_bus_id("0000:0b:00.0") == "0000:0b:00.0"
    assert normalise_bus_id("0B:00.0") == "0000:0b:00.0"
    assert normalise_bus_id("00000001:81:1F.7") == "0001:81:1f.7"
    assert normalise_bus_id("not a bus id") == "not a bus id"


def test_unopened_indices_take_the_free_bus_ids_between_their_neighbours():
    opened = {0: "0000:01:00.0", 2: "0000:05:00.0"}
    # One free nvidia function between cards 0 and 2: it is card 1; after card 2, card 3.
    assert attribute_unopened([1, 3], opened, ["0000:03:00.0", "0000:09:00.0"]) == {
        1: "0000:03:00.0",
        3: "0000:09:00.0",
    }
    # Two candidates for one gap: no guess.
    assert attribute_unopened([1], opened, ["0000:02:00.0", "0000:03:00.0"]) == {}
    # Nothing opened at all: a single lost card on a single free function.
    assert attribute_unopened([0], {}, ["0000:0b:00.0"]) == {0: "0000:0b:00.0"}


def test_card_lost_at_start_is_reported_with_bus_id_and_reason_and_joins_when_healed(
    scenario_file, tmp_path
):
    scenario = make_scenario(3)
    scenario["devices"][2]["lost"] = True
    with _exporter_on_rig(scenario_file, tmp_path, scenario) as (_, proc, base):
        s = scrape(base)
        assert s.value("rigwatch_nvml_devices") == 3
        assert [v for _, v in s.all("rigwatch_gpu_up")].count(1) == 2
        assert s.value("rigwatch_gpu_up", gpu="2") == 0
        assert s.value("rigwatch_gpu_up", gpu="2", uuid="") == 0
        assert s.all("rigwatch_gpu_open_failure_info") == [
            ({"gpu": "2", "pci_bus_id": LOST_BUS_ID, "reason": "gpu_is_lost"}, 1.0)
        ]
        # The bus's view: the lost card and the vfio card have no working NVML handle.
        assert s.value("rigwatch_pci_gpu_nvml_up", pci_bus_id="0000:01:00.0") == 1
        assert s.value("rigwatch_pci_gpu_nvml_up", pci_bus_id=LOST_BUS_ID) == 0
        assert s.value("rigwatch_pci_gpu_nvml_up", pci_bus_id=VFIO_BUS_ID) == 0
        # NVML's own cards carry the same spelling of the bus id.
        assert s.value("rigwatch_gpu_info", gpu="0", pci_bus_id="0000:01:00.0") == 1
        assert_no_nan(s.text)
        assert _promtool_check(s.text) == ""
        assert len(log_lines(proc.output(), "GPU index 2 cannot be identified")) == 1

        scenario["devices"][2]["lost"] = False
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_up", uuid=UUID2) == 1,
            timeout=10,
            what="the card joins after NVML is re-initialised",
        )
        s = scrape(base)
        assert s.all("rigwatch_gpu_open_failure_info") == []
        assert s.value("rigwatch_gpu_up", gpu="2", uuid="") is None
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID2) == 45
        assert s.value("rigwatch_pci_gpu_nvml_up", pci_bus_id=LOST_BUS_ID) == 1


def test_a_card_nvml_cannot_open_is_looked_for_at_the_slow_cadence_and_no_faster(
    scenario_file, tmp_path
):
    """Each re-initialisation stops NVML for every card, so a card NVML counts but cannot open
    is looked for once every --nvml.retry-max-seconds (0.5 s here): not at every scrape, not
    in a tight loop, and not only once. Counted from the exporter's own debug lines, with bounds
    a loaded machine cannot break: a wait can run long, never short."""
    retry = 0.5
    window = 4.0
    scenario = make_scenario(3)
    scenario["devices"][2]["lost"] = True
    with _exporter_on_rig(scenario_file, tmp_path, scenario, "--log.level=debug") as (
        _,
        proc,
        base,
    ):
        began = time.time()
        scrapes = 0
        while time.time() - began < window:  # scrapes all through: they must add no re-init
            assert scrape(base).value("rigwatch_gpu_up", gpu="2", uuid="") == 0
            scrapes += 1
            time.sleep(0.05)  # a pace, not a wait: scrapes spread through the whole window
        ended = time.time()
        times = [t for t in _reinit_times(proc.output()) if began <= t <= ended]
    assert scrapes >= 10
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 2, f"re-initialisations in {window} s: {times}"
    # Never faster than the cadence (the log's clock has millisecond steps)...
    assert min(gaps) >= retry - 0.01, gaps
    assert len(times) <= window / retry + 1, gaps
    # ...and it keeps coming back at about that cadence, a busy machine allowed for.
    assert statistics.median(gaps) < 3 * retry, gaps
    assert len(times) >= window / (3 * retry) - 1, gaps


def test_no_permission_reads_as_its_own_reason(scenario_file, tmp_path):
    scenario = make_scenario(3)
    scenario["devices"][1]["errors"] = {"nvmlDeviceGetHandleByIndex": "NO_PERMISSION"}
    with _exporter_on_rig(scenario_file, tmp_path, scenario) as (_, _, base):
        s = scrape(base)
        assert s.all("rigwatch_gpu_open_failure_info") == [
            ({"gpu": "1", "pci_bus_id": "0000:02:00.0", "reason": "no_permission"}, 1.0)
        ]


def test_card_only_the_bus_knows(scenario_file, tmp_path):
    scenario = make_scenario(3)
    scenario["devices"][1]["uncounted"] = True
    with _exporter_on_rig(scenario_file, tmp_path, scenario) as (tree, _, base):
        s = scrape(base)
        assert s.value("rigwatch_nvml_devices") == 2
        assert s.all("rigwatch_gpu_open_failure_info") == []
        assert s.value("rigwatch_pci_gpu_nvml_up", pci_bus_id="0000:02:00.0") == 0
        assert s.value("rigwatch_pci_gpu_info", pci_bus_id="0000:02:00.0") == 1
        assert s.value("rigwatch_pci_gpu_info", pci_bus_id="0000:02:00.0", driver="nvidia") == 1
        assert s.value("rigwatch_pci_gpu_info", pci_bus_id=VFIO_BUS_ID, driver="vfio-pci") == 1
        assert s.value("rigwatch_pci_gpu_info", pci_bus_id=VFIO_BUS_ID, device_id="0x20b5") == 1
        # Only NVIDIA GPU functions: not the card's audio function, not the network card.
        assert {labels["pci_bus_id"] for labels, _ in s.all("rigwatch_pci_gpu_info")} == {
            "0000:01:00.0",
            "0000:02:00.0",
            "0000:03:00.0",
            VFIO_BUS_ID,
        }
        # The bus's link for a card the driver cannot read: a x4 riser where x16 belongs.
        assert s.value("rigwatch_pci_link_width", pci_bus_id=VFIO_BUS_ID) == 4
        assert s.value("rigwatch_pci_link_max_width", pci_bus_id=VFIO_BUS_ID) == 16
        assert (
            s.value("rigwatch_pci_link_speed_transfers_per_second", pci_bus_id=VFIO_BUS_ID) == 8e9
        )
        assert (
            s.value("rigwatch_pci_link_max_speed_transfers_per_second", pci_bus_id=VFIO_BUS_ID)
            == 16e9
        )

        # Unbound from every driver: still on the bus, driver "none".
        tree.bind(VFIO_BUS_ID, None)
        assert scrape(base).value("rigwatch_pci_gpu_info", pci_bus_id=VFIO_BUS_ID, driver="none")


def test_card_that_leaves_the_bus_disappears_from_it(scenario_file, tmp_path):
    with _exporter_on_rig(scenario_file, tmp_path, make_scenario(3)) as (tree, _, base):
        assert scrape(base).value("rigwatch_pci_gpu_info", pci_bus_id=LOST_BUS_ID) == 1
        tree.remove(LOST_BUS_ID)
        s = scrape(base)
        assert s.all("rigwatch_pci_gpu_info", pci_bus_id=LOST_BUS_ID) == []
        assert s.all("rigwatch_pci_aer_events_total", pci_bus_id=LOST_BUS_ID) == []
        assert s.value("rigwatch_pci_gpu_info", pci_bus_id="0000:01:00.0") == 1
        assert s.value("rigwatch_scrape_collector_success", collector="pci") == 1


def test_aer_counters_rise_and_fall_back_to_the_upstream_port(scenario_file, tmp_path):
    with _exporter_on_rig(scenario_file, tmp_path, make_scenario(3)) as (tree, _, base):
        s = scrape(base)
        # A healthy link: the kernel's three event totals, at 0; no per-error series (44 a
        # card, every one 0) until an error is seen.
        events = s.all("rigwatch_pci_aer_events_total", pci_bus_id="0000:01:00.0")
        assert sorted((labels["severity"], v) for labels, v in events) == [
            ("correctable", 0),
            ("fatal", 0),
            ("nonfatal", 0),
        ]
        assert {labels["source"] for labels, _ in events} == {"device"}
        assert all("error" not in labels for labels, _ in events)
        assert s.all("rigwatch_pci_aer_errors_total", pci_bus_id="0000:01:00.0") == []
        # The card at 02 has no AER capability: its port's counters stand in.
        port = s.all("rigwatch_pci_aer_events_total", pci_bus_id="0000:02:00.0")
        assert port and {labels["source"] for labels, _ in port} == {"upstream_port"}

        # One event can set several status bits: the kernel's total counts events, the
        # per-error lines bits, so they need not add up (here 30 events, 43 bits).
        tree.set_aer("0000:01:00.0", "aer_dev_correctable", {"BadTLP": 3, "BadDLLP": 40}, total=30)
        tree.set_aer("0000:02:00.0", "aer_dev_fatal", {"CmpltTO": 1}, port=True)
        s = scrape(base)
        labels = {"pci_bus_id": "0000:01:00.0", "severity": "correctable"}
        assert s.value("rigwatch_pci_aer_events_total", **labels) == 30
        assert s.value("rigwatch_pci_aer_errors_total", **labels, error="BadTLP") == 3
        assert s.value("rigwatch_pci_aer_errors_total", **labels, error="BadDLLP") == 40
        assert s.all("rigwatch_pci_aer_errors_total", **labels, error="RxErr") == []
        fatal = {"pci_bus_id": "0000:02:00.0", "severity": "fatal"}
        assert s.value("rigwatch_pci_aer_errors_total", **fatal, error="CmpltTO") == 1
        assert s.value("rigwatch_pci_aer_events_total", **fatal) == 1


def test_sysfs_without_aer_files_and_with_unreadable_files(scenario_file, tmp_path):
    tree = SysfsTree(tmp_path / "sys")
    tree.add_function("0000:01:00.0", aer=False)
    tree.add_function("0000:02:00.0", port="0000:00:01.1")
    # sysfs attributes are read-only (0444): that must not matter.
    for path in (tree.root / "devices").rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    tree.make_unreadable("0000:02:00.0", "current_link_width")
    tree.make_unreadable("0000:02:00.0", "aer_dev_fatal")
    write_scenario(scenario_file, make_scenario(2))
    with running_exporter(scenario_file, FAST_RETRY, _sysfs_flag(tree)) as (proc, base):
        s = scrape(base)
        assert s.all("rigwatch_pci_aer_events_total", pci_bus_id="0000:01:00.0") == []
        assert s.value("rigwatch_pci_link_width", pci_bus_id="0000:01:00.0") == 16
        assert s.value("rigwatch_pci_link_width", pci_bus_id="0000:02:00.0") is None
        assert s.value("rigwatch_pci_link_max_width", pci_bus_id="0000:02:00.0") == 16
        severities = {
            labels["severity"]
            for labels, _ in s.all("rigwatch_pci_aer_events_total", pci_bus_id="0000:02:00.0")
        }
        assert severities == {"correctable", "nonfatal"}
        assert s.value("rigwatch_scrape_collector_success", collector="pci") == 1
        scrape(base)
        assert len(log_lines(proc.output(), "cannot read .*aer_dev_fatal")) == 1
        assert_no_nan(s.text)


def test_missing_sysfs_costs_only_the_bus_series(scenario_file, tmp_path):
    write_scenario(scenario_file, make_scenario(2))
    with running_exporter(scenario_file, FAST_RETRY, f"--path.sysfs={tmp_path / 'none'}") as (
        _,
        base,
    ):
        s = scrape(base)
        assert s.all("rigwatch_pci_gpu_info") == []
        assert s.value("rigwatch_gpu_up", gpu="1") == 1
        assert s.value("rigwatch_scrape_collector_success", collector="pci") == 1


ACTIONS = {
    0: "none",
    1: "gpu_reset",
    2: "node_reboot",
    3: "drain_p2p",
    4: "drain_and_reset",
    6: "bus_reset",
    7: "system_reboot",
}


def test_each_recovery_action_is_named(scenario_file, tmp_path):
    scenario = make_scenario(len(ACTIONS) + 1)
    for device, code in zip(scenario["devices"], ACTIONS, strict=False):
        device["recovery_action"] = code
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, _sysfs_flag(rig_tree(tmp_path))) as (_, base):
        s = scrape(base)
        for index, (code, name) in enumerate(ACTIONS.items()):
            assert s.all("rigwatch_gpu_recovery_action", gpu=str(index)) == [
                (
                    {
                        "gpu": str(index),
                        "uuid": f"GPU-{index:08x}-1111-2222-3333-444444444444",
                        "action": name,
                    },
                    code,
                )
            ]
        # The last card's driver does not have the field: no series.
        assert s.all("rigwatch_gpu_recovery_action", gpu=str(len(ACTIONS))) == []


@pytest.mark.parametrize("code", [8, 4294967295])
def test_unknown_recovery_action_is_left_out(scenario_file, tmp_path, code):
    scenario = make_scenario(1)
    scenario["devices"][0]["recovery_action"] = code
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, _sysfs_flag(rig_tree(tmp_path))) as (_, base):
        s = scrape(base)
        assert s.all("rigwatch_gpu_recovery_action") == []
        assert s.value("rigwatch_gpu_up", gpu="0") == 1
