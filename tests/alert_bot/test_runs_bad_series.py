"""The run watch against a pushing rig that sends start times no clock can show (-1e300,
1e300, +Inf, NaN): each bad series is skipped with one warning, never recorded as running,
and a genuine run on another rig still gets its message."""

from __future__ import annotations

import logging

from tests.alert_bot.botkit import CHAT, bot_env, running_bot
from tests.alert_bot.runkit import RULES, RestartablePrometheus, SimulatedRig, training_process
from tests.alert_bot.test_runs import _stored_runs
from tests.support import running_exporter, serving_exposition, wait_until

BAD_STARTS = {"101": "-1e300", "102": "1e300", "103": "+Inf", "104": "NaN"}


def _exposition() -> bytes:
    """A rig whose process list is readable and holds four processes with bogus start times."""
    lines = [
        "rigwatch_nvml_up 1",
        'rigwatch_scrape_collector_success{collector="gpu_process"} 1',
    ]
    for pid, start in BAD_STARTS.items():
        lines.append(
            f'rigwatch_gpu_process_start_time_seconds{{gpu="0",uuid="GPU-bad",pid="{pid}",'
            f'process="bogus{pid}"}} {start}'
        )
    return ("\n".join(lines) + "\n").encode()


def _config(exporter: str, bad: str) -> str:
    return (
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: rigwatch\n"
        f"    static_configs: [{{targets: ['{exporter}'], labels: {{rig: rig1}}}},"
        f" {{targets: ['{bad}'], labels: {{rig: rigbad}}}}]\n"
    )


def test_bogus_start_times_are_skipped_and_a_real_run_still_ends(tmp_path, telegram, caplog):
    caplog.set_level(logging.WARNING, logger="rigwatch.bot.runs")
    rig = SimulatedRig(tmp_path / "scenario.json", cards=1)
    train = None
    try:
        with (
            serving_exposition(_exposition) as bad,
            rig,
            running_exporter(rig.path, "--nvml.retry-max-seconds=0.5") as (_, base),
        ):
            prometheus = RestartablePrometheus(
                tmp_path / "prometheus", _config(base.removeprefix("http://"), bad)
            )
            prometheus.start()
            try:
                train = training_process(tmp_path, "train.py")
                rig.place(train.pid, [0])
                settings = {"runs": {"interval": "1s", "min_duration": "1s", "notify_start": True}}
                env = bot_env(tmp_path, telegram.url, settings, prometheus=prometheus.url)
                with running_bot(env):
                    db = tmp_path / "bot.db"
                    wait_until(
                        lambda: any(r["run_name"] == "train.py" for r in _stored_runs(db)),
                        timeout=30,
                        what="the genuine run recorded",
                    )
                    wait_until(
                        lambda: (
                            sum("unusable start time" in r.getMessage() for r in caplog.records)
                            >= len(BAD_STARTS)
                        ),
                        timeout=30,
                        what="one warning per bad series",
                    )
                    train.kill()
                    train.wait()
                    rig.remove(train.pid)
                    wait_until(
                        lambda: any(
                            "🏁 Run ended" in t and "train.py" in t
                            for t in telegram.visible_texts(CHAT)
                        ),
                        timeout=30,
                        what="the genuine run's end reported",
                    )
            finally:
                prometheus.stop()
    finally:
        if train is not None and train.poll() is None:
            train.kill()
            train.wait()
    rows = _stored_runs(tmp_path / "bot.db")
    assert [r["run_name"] for r in rows] == ["train.py"], [dict(r) for r in rows]
    assert rows[0]["status"] == "ended"
    warnings = [r.getMessage() for r in caplog.records if "unusable start time" in r.getMessage()]
    assert len(warnings) == len(BAD_STARTS), warnings
    for pid in BAD_STARTS:
        assert sum(f"process {pid} " in w for w in warnings) == 1, warnings
