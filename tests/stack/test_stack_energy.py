"""The energy dashboard's queries against a real Prometheus that scrapes the real exporter on
the simulated NVML (one card without an energy counter) and the alert bot (for the price)."""

from __future__ import annotations

import json
import time
import urllib.parse

from tests.alert_bot.botkit import BOT_TOKEN, bot_env, running_bot, wait_prometheus_has
from tests.alert_bot.fake_telegram import FakeTelegram
from tests.alert_bot.runkit import RULES, SimulatedRig
from tests.servers import running_prometheus
from tests.stack.stack_support import GRAFANA_DIR, dashboard_queries, substitute_variables
from tests.support import http_get, running_exporter

RANGE = {"$__range": "10s", "$__range_s": "10"}


def test_every_energy_query_answers_with_kwh_cost_and_estimates(tmp_path):
    rig = SimulatedRig(tmp_path / "scenario.json", cards=2, watts=250)
    rig.without_counter(1)
    with (
        FakeTelegram(BOT_TOKEN) as telegram,
        rig,
        running_exporter(rig.path, "--nvml.retry-max-seconds=0.5") as (_, exporter),
        running_bot(
            bot_env(tmp_path, telegram.url, {"energy": {"price_per_kwh": 0.5}}),
            run_updates=False,
        ) as (_, bot),
    ):
        config = (
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: rigwatch\n"
            f"    static_configs: [{{targets: ['{exporter.removeprefix('http://')}'],"
            " labels: {rig: rig1}}]\n"
            "  - job_name: alert-bot\n"
            f"    static_configs: [{{targets: ['{bot.removeprefix('http://')}']}}]\n"
        )
        with running_prometheus(tmp_path, config) as prometheus:
            wait_prometheus_has(prometheus, "gpu:rigwatch_energy_watts:rate1m", timeout=30)
            wait_prometheus_has(prometheus, "rigwatch_bot_energy_price_per_kwh", timeout=30)
            # A period, not an event: the dashboards' window must be full of data.
            time.sleep(int(RANGE["$__range_s"]) + 1)
            board = json.loads((GRAFANA_DIR / "dashboards" / "energy.json").read_text())
            answers = {}
            at = time.time()
            for title, expr, _ in dashboard_queries(board):
                # One moment for every query, so kWh and cost describe the same window.
                result = _query_at(prometheus, substitute_variables(expr, RANGE), at)
                assert result, f"{title}: no data for {expr}"
                answers.setdefault(title, []).append((expr, result))
    per_card = answers["Per card, today"]
    kwh = {
        r["metric"]["gpu"]: (r["metric"]["estimated"], float(r["value"][1])) for r in per_card[0][1]
    }
    # 250 W for the 10 s range ≈ 0.000694 kWh per card.
    assert kwh["0"][0] == "false" and kwh["1"][0] == "true"
    for _, value in kwh.values():
        assert abs(value - 250 * 10 / 3.6e6) < 0.2 * 250 * 10 / 3.6e6
    cost = {r["metric"]["gpu"]: float(r["value"][1]) for r in per_card[1][1]}
    assert abs(cost["0"] - kwh["0"][1] * 0.5) < 1e-9
    estimated = answers["Per rig, 7 days"][2][1]
    assert [float(r["value"][1]) for r in estimated] == [1.0]


def _query_at(base: str, promql: str, at: float) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    status, body = http_get(url, timeout=10)
    data = json.loads(body)
    assert status == 200 and data.get("status") == "success", body
    return data["data"]["result"]
