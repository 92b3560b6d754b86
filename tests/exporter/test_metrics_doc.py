"""docs/metrics.md and the exporter's real output name the same families, types and labels."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.exporter.scenarios import full_scenario
from tests.exporter.scrapes import FAST_RETRY, scrape
from tests.exporter.sysfs_tree import rig_tree
from tests.exporter.test_gpm import H200_UNDER_LOAD
from tests.support import (
    REPO,
    make_device,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

DOC = REPO / "docs" / "metrics.md"


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) from the table in docs/metrics.md."""
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not re.fullmatch(r"rigwatch_\w+", cells[0]):
            continue
        labels = frozenset(part.strip() for part in cells[3].split(",") if part.strip())
        assert cells[0] not in table, f"{cells[0]} documented twice"
        table[cells[0]] = (cells[1], labels)
    return table


def _hwmon(root: Path) -> None:
    chip = root / "class" / "hwmon" / "hwmon0"
    chip.mkdir(parents=True)
    for name, text in {
        "name": "coretemp",
        "temp1_input": "50000",
        "temp1_max": "80000",
        "temp1_crit": "100000",
        "fan1_input": "900",
    }.items():
        (chip / name).write_text(text + "\n")


def test_docs_and_output_name_the_same_families_types_and_labels(scenario_file, tmp_path):
    # Everything supported: every family the exporter can produce shows up.
    scenario = full_scenario(
        processes=[{"pid": os.getpid(), "used_memory_bytes": 1 << 30, "sm_util_percent": 5}]
    )
    scenario["devices"][0]["xid_events"] = [13]
    # A third card NVML counts but cannot open, on a bus that also shows a vfio-bound card.
    scenario["devices"].append(make_device(2, lost=True))
    write_scenario(scenario_file, scenario)
    tree = rig_tree(tmp_path / "sys")
    # An error seen once, so its per-error counter is there too.
    tree.set_aer("0000:01:00.0", "aer_dev_correctable", {"BadTLP": 2}, total=1)
    _hwmon(tmp_path / "sys")
    with running_exporter(
        scenario_file,
        FAST_RETRY,
        "--collector.pcie_throughput",
        f"--path.sysfs={tmp_path / 'sys'}",
    ) as (_, base):
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_xid_errors_total", xid="13") == 1,
            timeout=5,
            what="xid 13",
        )
        s = scrape(base)
    # GPM series need two samples of one NVML initialisation a second apart, which the lost
    # card above (NVML re-initialised every 0.5 s) never leaves: a Hopper card on its own.
    gpm_card = make_scenario(1)
    gpm_card["devices"][0]["gpm"] = dict(H200_UNDER_LOAD)
    write_scenario(scenario_file, gpm_card)
    with running_exporter(scenario_file, FAST_RETRY) as (_, base):
        gpm = wait_until(
            lambda: (g := scrape(base)).all("rigwatch_gpu_gpm_window_seconds") and g,
            timeout=10,
            what="GPM series",
        )

    exported: dict[str, tuple[str, set[str]]] = {}
    gpm_families = [f for name, f in gpm.families.items() if name not in s.families]
    for family in [*s.families.values(), *gpm_families]:
        for sample in family.samples:
            kind, labels = exported.setdefault(sample.name, (family.type, set()))
            labels.update(sample.labels)
    doc = documented()

    missing_from_doc = sorted(set(exported) - set(doc))
    missing_from_output = sorted(set(doc) - set(exported))
    assert not missing_from_doc, f"exported but not in docs/metrics.md: {missing_from_doc}"
    assert not missing_from_output, f"documented but not exported: {missing_from_output}"
    for name, (kind, labels) in exported.items():
        doc_kind, doc_labels = doc[name]
        assert kind == doc_kind, f"{name}: exported as {kind}, documented as {doc_kind}"
        assert labels == doc_labels, f"{name}: labels {sorted(labels)} vs doc {sorted(doc_labels)}"
        assert name.endswith("_total") == (kind == "counter"), name


def test_the_doc_parser_sees_the_whole_table():
    # Guards the test above against a table format change that would make it compare nothing.
    table = documented()
    assert len(table) >= 60
    assert table["rigwatch_gpu_up"] == ("gauge", frozenset({"gpu", "uuid"}))
