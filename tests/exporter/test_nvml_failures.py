"""NVML missing, not ready, empty, or losing cards: the exporter keeps serving and recovers."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from tests.exporter.scrapes import FAST_RETRY, UUID0, UUID1, log_lines, scrape
from tests.support import (
    FAKE_NVML_DIR,
    ManagedProcess,
    make_scenario,
    running_exporter,
    wait_until,
    write_scenario,
)

REINIT = r"NVML \(re\)initialisation #"  # logged at debug level, once per attempt


def _host_is_reported(s) -> None:
    assert s.value("rigwatch_host_memory_total_bytes") > 0
    assert s.value("rigwatch_scrape_collector_success", collector="host") == 1


def _gpu_up(base: str, uuid: str) -> float | None:
    return scrape(base).value("rigwatch_gpu_up", uuid=uuid)


def _wait_for_retries(proc, pattern: str, count: int) -> None:
    """Wait until the exporter (at --log.level=debug) has logged `count` more lines matching
    pattern: its NVML supervisor's retries, counted, not guessed from the clock."""
    before = len(log_lines(proc.output(), pattern))
    wait_until(
        lambda: len(log_lines(proc.output(), pattern)) >= before + count,
        timeout=20,
        what=f"{count} more '{pattern}'",
    )


def _wait_for_reinit_without_a_card(proc, base: str) -> None:
    """Scrape until a re-initialisation has logged a card as no longer visible."""
    wait_until(
        lambda: scrape(base) and "no longer visible" in proc.output(),
        timeout=10,
        what="re-init without it",
    )


def test_no_nvml_library_serves_host_metrics_then_picks_the_library_up(tmp_path, fake_nvml_dir):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario, make_scenario(2))
    env = {"LD_LIBRARY_PATH": str(lib_dir), "FAKE_NVML_SCENARIO": str(scenario)}
    with running_exporter(None, FAST_RETRY, "--log.level=debug", env=env) as (proc, base):
        s = scrape(base)
        assert s.value("rigwatch_nvml_up") == 0
        assert s.all("rigwatch_gpu_up") == []
        assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 1
        _host_is_reported(s)
        _wait_for_retries(proc, "NVML still unavailable", 3)  # several retries
        scrape(base)
        reasons = log_lines(proc.output(), "NVML unavailable")
        assert len(reasons) == 1, proc.output()
        assert "LIBRARY_NOT_FOUND" in reasons[0]

        # The "driver" gets installed while the exporter runs.
        shutil.copy(FAKE_NVML_DIR / "libnvidia-ml.so.1", lib_dir / "libnvidia-ml.so.1")
        wait_until(lambda: scrape(base).value("rigwatch_nvml_up") == 1, timeout=10, what="nvml up")
        s = scrape(base)
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
        assert s.value("rigwatch_gpu_up", uuid=UUID1) == 1
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID1) == 45


@contextlib.contextmanager
def _exporter_without_nvml(
    scenario_file: Path, scenario: dict, absent: str
) -> Iterator[tuple[ManagedProcess, str]]:
    """The exporter on a scenario in which NVML is down: nvml_up 0, no `absent` series, the
    host still reported."""
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--log.level=debug") as (proc, base):
        s = scrape(base)
        assert s.value("rigwatch_nvml_up") == 0
        assert s.all(absent) == []
        _host_is_reported(s)
        yield proc, base


def _nvml_comes_up(scenario_file: Path, scenario: dict, base: str, uuid: str) -> None:
    """The scenario written with NVML well: the card `uuid` and nvml_up come up."""
    write_scenario(scenario_file, scenario)
    wait_until(lambda: _gpu_up(base, uuid) == 1, timeout=10, what=f"gpu {uuid} up")
    assert scrape(base).value("rigwatch_nvml_up") == 1


def test_driver_not_loaded_then_loaded_without_restart(scenario_file):
    scenario = make_scenario(2, init_error="DRIVER_NOT_LOADED")
    with _exporter_without_nvml(scenario_file, scenario, "rigwatch_driver_info") as (proc, base):
        _wait_for_retries(proc, "NVML still unavailable", 2)
        scrape(base)
        reasons = log_lines(proc.output(), "NVML unavailable")
        assert len(reasons) == 1 and "DRIVER_NOT_LOADED" in reasons[0], proc.output()

        scenario["init_error"] = None
        _nvml_comes_up(scenario_file, scenario, base, UUID1)
        assert len(log_lines(proc.output(), "NVML initialised")) == 1


def test_zero_gpus_reads_as_nvml_down_until_a_card_appears(scenario_file):
    none = make_scenario(0)
    with _exporter_without_nvml(scenario_file, none, "rigwatch_gpu_info") as (proc, base):
        assert len(log_lines(proc.output(), "no GPUs")) == 1

        _nvml_comes_up(scenario_file, make_scenario(1), base, UUID0)


def test_card_lost_mid_run_reads_zero_keeps_identity_and_comes_back(scenario_file):
    scenario = make_scenario(2)
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--log.level=debug") as (proc, base):
        assert _gpu_up(base, UUID1) == 1
        scenario["devices"][1]["lost"] = True
        write_scenario(scenario_file, scenario)
        wait_until(lambda: _gpu_up(base, UUID1) == 0, timeout=5, what="gpu 1 lost")
        s = scrape(base)
        # The lost card keeps its identity, loses its readings; the other card and host go on.
        assert s.value("rigwatch_gpu_info", gpu="1", uuid=UUID1) == 1
        assert s.all("rigwatch_gpu_temperature_celsius", uuid=UUID1) == []
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID0) == 45
        assert s.value("rigwatch_nvml_up") == 1
        assert s.value("rigwatch_scrape_collector_success", collector="gpu") == 1
        _host_is_reported(s)
        assert log_lines(proc.output(), UUID1 + r".*is lost")

        # Still lost across re-initialisations while the card stays off the bus.
        _wait_for_retries(proc, REINIT, 2)
        assert _gpu_up(base, UUID1) == 0

        scenario["devices"][1]["lost"] = False
        write_scenario(scenario_file, scenario)
        # NVML latches a lost card until re-initialisation: only the exporter's re-init brings
        # it back, which is what this waits for.
        wait_until(lambda: _gpu_up(base, UUID1) == 1, timeout=10, what="gpu 1 back")
        s = scrape(base)
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID1) == 45
        assert s.value("rigwatch_gpu_info", gpu="1", uuid=UUID1) == 1


def test_removed_card_keeps_its_series_at_zero_and_returns_when_plugged_back(scenario_file):
    scenario = make_scenario(2)
    write_scenario(scenario_file, scenario)
    with running_exporter(scenario_file, FAST_RETRY, "--log.level=debug") as (proc, base):
        assert _gpu_up(base, UUID1) == 1
        write_scenario(scenario_file, make_scenario(1))
        # Scrapes find the card gone (GPU_IS_LOST), the re-initialisation no longer lists it.
        _wait_for_reinit_without_a_card(proc, base)
        s = scrape(base)
        assert s.value("rigwatch_gpu_up", gpu="1", uuid=UUID1) == 0
        assert s.value("rigwatch_gpu_info", gpu="1", uuid=UUID1) == 1
        assert s.all("rigwatch_gpu_memory_used_bytes", uuid=UUID1) == []
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1
        _wait_for_retries(proc, REINIT, 2)  # more re-initialisations: the card must not vanish
        assert _gpu_up(base, UUID1) == 0

        write_scenario(scenario_file, make_scenario(2))
        wait_until(lambda: _gpu_up(base, UUID1) == 1, timeout=10, what="gpu 1 back")


UUID2 = "GPU-00000002-1111-2222-3333-444444444444"
# Prometheus's header for a 0.5 s scrape timeout: the exporter answers within 0.25 s.
SHORT_DEADLINE = {"X-Prometheus-Scrape-Timeout-Seconds": "0.5"}


def _reinitialisations(output: str) -> int:
    return len(log_lines(output, REINIT))


def test_healthy_cards_never_read_down_while_nvml_looks_for_a_missing_card(scenario_file):
    # Card 0 answers one of the calls made only at NVML init slowly, as a real driver's
    # shutdown + init is slow: every re-initialisation then outlasts a short scrape deadline.
    scenario = make_scenario(3)
    scenario["devices"][0]["hang_ms"] = {"nvmlDeviceGetMaxPcieLinkWidth": 400}
    scenario["devices"][1]["xid_events"] = [13]
    write_scenario(scenario_file, scenario)
    flags = ("--nvml.retry-max-seconds=0.3", "--log.level=debug")
    with running_exporter(scenario_file, *flags) as (proc, base):
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_xid_errors_total", uuid=UUID1, xid="13") == 1,
            timeout=5,
            what="xid 13",
        )
        assert _gpu_up(base, UUID2) == 1

        without_card_2 = make_scenario(2)
        without_card_2["devices"][0]["hang_ms"] = {"nvmlDeviceGetMaxPcieLinkWidth": 400}
        without_card_2["devices"][1]["xid_events"] = [13]
        write_scenario(scenario_file, without_card_2)
        _wait_for_reinit_without_a_card(proc, base)
        before = _reinitialisations(proc.output())
        scrapes, card_2_up = 0, []
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            if scrapes == 20:  # new Xid events on a healthy card while re-inits come and go
                without_card_2["devices"][1]["xid_events"] = [13, 79, 13]
                write_scenario(scenario_file, without_card_2)
            s = scrape(base, headers=SHORT_DEADLINE)
            scrapes += 1
            for uuid in (UUID0, UUID1):
                assert s.value("rigwatch_gpu_up", uuid=uuid) == 1, (scrapes, uuid, s.text)
                assert s.value("rigwatch_gpu_temperature_celsius", uuid=uuid) == 45, uuid
                assert s.value("rigwatch_gpu_memory_total_bytes", uuid=uuid) is not None, uuid
            assert s.value("rigwatch_gpu_info", uuid=UUID2) == 1
            card_2_up.append(s.value("rigwatch_gpu_up", uuid=UUID2))
        cycles = _reinitialisations(proc.output()) - before
        # Several slow re-initialisations overlapped the scrapes above, none of them seen.
        assert cycles >= 3, (cycles, proc.output())
        assert scrapes >= 20
        assert set(card_2_up) == {0}
        wait_until(
            lambda: scrape(base).value("rigwatch_gpu_xid_errors_total", uuid=UUID1, xid="79") == 1,
            timeout=5,
            what="xid 79",
        )
        s = scrape(base)
        assert s.value("rigwatch_gpu_xid_errors_total", uuid=UUID1, xid="13") == 2
        assert s.value("rigwatch_gpu_xid_errors_total", uuid=UUID0, xid="79") == 0

        write_scenario(scenario_file, scenario)
        wait_until(lambda: _gpu_up(base, UUID2) == 1, timeout=10, what="gpu 2 back")
        s = scrape(base)
        assert s.value("rigwatch_gpu_temperature_celsius", uuid=UUID2) == 45
        assert s.value("rigwatch_gpu_up", uuid=UUID0) == 1


RETRY_MAX_S = 3


def test_a_card_gone_from_the_list_is_looked_for_only_at_the_longest_interval(scenario_file):
    write_scenario(scenario_file, make_scenario(2))
    flags = (f"--nvml.retry-max-seconds={RETRY_MAX_S}", "--log.level=debug")
    with running_exporter(scenario_file, *flags) as (proc, base):
        assert _gpu_up(base, UUID1) == 1
        write_scenario(scenario_file, make_scenario(1))
        _wait_for_reinit_without_a_card(proc, base)
        gone_at = time.monotonic()
        after_loss = _reinitialisations(proc.output())
        # A period, not an event: nothing may happen in it. A backoff starting at 1 s would
        # have re-initialised NVML within 2 s; the longest interval waits RETRY_MAX_S.
        time.sleep(2.0)
        assert _reinitialisations(proc.output()) == after_loss, proc.output()
        assert _gpu_up(base, UUID1) == 0
        assert _gpu_up(base, UUID0) == 1

        # Plugged back: found by the next look, at most --nvml.retry-max-seconds later.
        write_scenario(scenario_file, make_scenario(2))
        wait_until(lambda: _gpu_up(base, UUID1) == 1, timeout=4 * RETRY_MAX_S, what="gpu 1 back")
        # Found by the very next look (counted), before a second one would have come.
        assert _reinitialisations(proc.output()) == after_loss + 1, proc.output()
        assert time.monotonic() - gone_at < 2 * RETRY_MAX_S


def test_a_consumer_card_logs_what_it_lacks_in_one_line_per_card(scenario_file):
    """GeForce cards answer NOT_SUPPORTED to several fields (a threshold at start, memory
    temperature, ECC, remapped rows, recovery action at the first scrape): one INFO line per
    card names them all, instead of one line per field."""
    write_scenario(scenario_file, make_scenario(2))
    with running_exporter(scenario_file, FAST_RETRY) as (proc, base):
        scrape(base)
        wait_until(
            lambda: len(log_lines(proc.output(), "does not give")) == 2, what="the summaries"
        )
        scrape(base)
        summaries = log_lines(proc.output(), "does not give")
        assert len(summaries) == 2, proc.output()
        for uuid, line in zip((UUID0, UUID1), summaries, strict=True):
            assert "level=INFO" in line and f"({uuid})" in line, line
            for field in (
                "nvmlDeviceGetTemperatureThreshold(MEM_MAX)",
                "nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)",
                "nvmlDeviceGetTotalEccErrors",
                "nvmlDeviceGetRemappedRows",
                "nvmlDeviceGetFieldValues(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)",
            ):
                refused = line.split("answers NOT_SUPPORTED: ", 1)[1].split(";")[0].split(", ")
                assert field in refused, (field, line)
        assert log_lines(proc.output(), "NOT_SUPPORTED") == summaries, proc.output()
