"""Xid errors counted by card and code through NVML's event API, critical codes labelled."""

from __future__ import annotations

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, scrape
from tests.support import make_scenario, running_exporter, wait_until, write_scenario


def _xids(base: str, uuid: str) -> dict[str, tuple[str, float]]:
    return {
        labels["xid"]: (labels["critical"], value)
        for labels, value in scrape(base).all("rigwatch_gpu_xid_errors_total", uuid=uuid)
    }


def test_xid_events_are_counted_by_code_and_survive_reinitialisation(scenario_file):
    scenario = make_scenario(2)
    scenario["devices"][1]["xid_events"] = [13, 79]
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        wait_until(lambda: _xids(base, UUID1).get("79") == ("true", 1), timeout=5, what="xid 79")
        counts = _xids(base, UUID1)
        assert counts["13"] == ("false", 1)
        # Critical codes start at zero so that the first fault is an increase.
        assert counts["48"] == ("true", 0)
        assert _xids(base, UUID0)["79"] == ("true", 0)
        assert "13" not in _xids(base, UUID0)
        s = scrape(base)
        assert s.families["rigwatch_gpu_xid_errors"].type == "counter"
        assert s.value("rigwatch_gpu_xid_errors_total", uuid=UUID1, xid="79", gpu="1") == 1

        scenario["devices"][1]["xid_events"] = [13, 79, 13, 13, 48]
        write_scenario(scenario_file, scenario)
        wait_until(lambda: _xids(base, UUID1).get("48") == ("true", 1), timeout=5, what="xid 48")
        assert _xids(base, UUID1)["13"] == ("false", 3)
        assert _xids(base, UUID1)["79"] == ("true", 1)

        # Card 0 falls off the bus and comes back: NVML is re-initialised, the event set is
        # rebuilt, the counts carry on.
        scenario["devices"][0]["lost"] = True
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_up", uuid=UUID0) == 0, timeout=5, what="lost"
        )
        scenario["devices"][0]["lost"] = False
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_up", uuid=UUID0) == 1, timeout=10, what="back"
        )
        assert _xids(base, UUID1)["13"] == ("false", 3)
        scenario["devices"][0]["xid_events"] = [94]
        write_scenario(scenario_file, scenario)
        wait_until(lambda: _xids(base, UUID0).get("94") == ("true", 1), timeout=5, what="xid 94")
        assert _xids(base, UUID1)["13"] == ("false", 3)
        assert scrape(base).value("rigwatch_scrape_collector_success", collector="xid") == 1


def test_critical_codes_follow_the_flag(scenario_file):
    scenario = make_scenario(1)
    scenario["devices"][0]["xid_events"] = [13, 79]
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--collector.xid.critical-codes=13,31") as (
        _,
        base,
    ):
        wait_until(lambda: "79" in _xids(base, UUID0), timeout=5, what="xid 79")
        counts = _xids(base, UUID0)
        assert counts == {"13": ("true", 1), "31": ("true", 0), "79": ("false", 1)}


def test_event_api_failure_marks_only_the_xid_collector(scenario_file):
    scenario = make_scenario(1, errors={"nvmlEventSetCreate": "UNKNOWN"})
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        wait_until(
            lambda: scrape(base).value("rigwatch_scrape_collector_success", collector="xid") == 0,
            timeout=5,
            what="xid collector unsuccessful",
        )
        s = scrape(base)
        assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 1
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
        assert "cannot create an NVML event set" in proc.output()
