"""The daily digest: per rig, over the last 24 h, GPU-hours busy, runs ended, alerts fired, the peak
temperature, and the energy and its cost."""

from __future__ import annotations

import html
from collections import defaultdict

from alert_bot.config import Config
from alert_bot.i18n import (
    _,
    format_number,
    ngettext,
)
from alert_bot.runs.energy import (
    DAY,
    JOULES_PER_KWH,
    host_share,
    integral_query,
    kwh_text,
    local_text,
    rig_energy,
)
from alert_bot.runs.table import RunTable
from alert_bot.upstream.prometheus import PrometheusClient


def digest_text(prometheus: PrometheusClient, config: Config, table: RunTable, now: float) -> str:
    """The daily digest: per rig, GPU-hours busy, runs ended, alerts fired, peak temperatures,
    kWh and cost over the last 24 h."""

    def by_rig(expr: str) -> dict[str, float]:
        return {
            r["metric"].get("rig") or r["metric"].get("instance", "?"): r["value"]
            for r in prometheus.query(expr, at=now)
        }

    # Busy seconds integrated over the samples that exist (as energy is): a rig that reported
    # for an hour of the day is busy for at most an hour, never its average × 24 h.
    utilization = integral_query("rigwatch_gpu_utilization_ratio", now - DAY, now)
    busy = by_rig(f"sum by (rig, instance) ({utilization}) / 3600")
    alerts = by_rig(
        'count by (rig) (max_over_time(ALERTS{alertstate="firing",alertname!="Watchdog"}[1d]))'
    )
    peak = by_rig("max by (rig, instance) (max_over_time(rigwatch_gpu_temperature_celsius[1d]))")
    energy_by_rig = rig_energy(prometheus, config, now - DAY, now)
    ended: dict[str, int] = defaultdict(int)
    for run in table.ended_since(now - DAY):
        ended[run.rig] += 1
    lines = [_("🗓 <b>Daily digest</b> · {time}").format(time=local_text(config, now))]
    for rig in sorted({*busy, *energy_by_rig, *ended}):
        parts = [f"🖥 <b>{html.escape(rig)}</b>"]
        if rig in busy:
            parts.append(_("{hours} GPU-hours busy").format(hours=format_number(busy[rig])))
        runs_ended = ended.get(rig, 0)
        parts.append(
            ngettext("{count} run ended", "{count} runs ended", runs_ended).format(count=runs_ended)
        )
        fired = int(round(alerts.get(rig, 0)))
        parts.append(
            ngettext("{count} alert fired", "{count} alerts fired", fired).format(count=fired)
        )
        if rig in peak:
            parts.append(_("peak {celsius} °C").format(celsius=f"{peak[rig]:.0f}"))
        cards = energy_by_rig.get(rig, [])
        host_kwh, host_cost = host_share(config, cards)
        parts.append(
            kwh_text(
                config,
                sum(c.joules for c in cards) / JOULES_PER_KWH + host_kwh,
                sum(c.cost for c in cards) + host_cost,
                any(c.estimated for c in cards),
            )
        )
        lines.append(" · ".join(parts))
    if len(lines) == 1:
        lines.append(_("No data from Prometheus for the last 24 h."))
    return "\n".join(lines)
