"""The run watch's messages: a run started, a run ended (with its summary), and where they go
(the configured routes, matched against the run's labels like an alert's, and the chat of the
run's user when runs.user_chats names one)."""

from __future__ import annotations

import html

from alert_bot.config import Config
from alert_bot.i18n import _, format_number
from alert_bot.runs.energy import duration_text, kwh_text, local_text
from alert_bot.runs.table import Run
from alert_bot.store import NewNotification
from alert_bot.upstream.units import GIB


def destinations(config: Config, run: Run, html_text: str) -> list[NewNotification]:
    """One notice per chat (and topic) the routes give for the run's labels, and one for the
    chat of the run's user (runs.user_chats); with runs.user_chats_only a mapped user's run
    goes to that chat alone. Each is an outbox row like any notice: the same retries and
    flood limits, no side channel."""
    return [
        NewNotification(chat_id, thread_id, "notice", {"html": html_text})
        for chat_id, thread_id in config.targets(run.labels(), run.user)
    ]


def cards_text(run: Run) -> str:
    """ "GPU 0, 1 (NVIDIA GeForce RTX 4090)", or each card with its model when they differ."""
    cards = sorted(run.cards.values(), key=lambda c: (len(c["gpu"]), c["gpu"]))
    models = {c.get("name", "") for c in cards}
    if len(models) == 1:
        model = models.pop()
        text = _("GPU {gpu}").format(gpu=", ".join(c["gpu"] for c in cards))
        return text + (f" ({model})" if model else "")
    return ", ".join(
        _("GPU {gpu}").format(gpu=c["gpu"]) + f" ({c.get('name') or '?'})" for c in cards
    )


def _who(run: Run) -> str:
    parts = []
    if run.user:
        parts.append(f"👤 {html.escape(run.user)}")
    if run.container:
        parts.append(_("🐳 container <code>{name}</code>").format(name=html.escape(run.container)))
    else:
        parts.append(_("on the host"))
    return " · ".join(parts)


def started_text(config: Config, run: Run) -> str:
    return "\n".join(
        [
            _("▶️ <b>Run started</b> · <code>{run}</code> (pid {pid})").format(
                run=html.escape(run.run_name), pid=run.pid
            ),
            _where(run),
            _who(run),
            _("🕒 started {time}").format(time=local_text(config, run.start_time)),
        ]
    )


def ended_text(config: Config, run: Run, ended_at: float, summary: dict) -> str:
    """The finished-run message. It says "ended": from outside, a clean exit, a crash and a
    kill look the same."""
    lines = [
        _("🏁 <b>Run ended</b> · <code>{run}</code> (pid {pid})").format(
            run=html.escape(run.run_name), pid=run.pid
        ),
        _where(run),
        _who(run),
        f"🕒 {local_text(config, run.start_time)} → "
        f"{local_text(config, ended_at, _same_day(config, run.start_time, ended_at))}"
        f" ({duration_text(ended_at - run.start_time)})",
    ]
    figures = []
    if summary.get("peak_memory_bytes") is not None:
        figures.append(
            _("peak {size} GiB GPU memory").format(
                size=format_number(summary["peak_memory_bytes"] / GIB)
            )
        )
    if summary.get("mean_utilization") is not None:
        figures.append(
            _("mean utilisation {percent}%").format(
                percent=f"{summary['mean_utilization'] * 100:.0f}"
            )
        )
    if figures:
        lines.append("📊 " + " · ".join(figures))
    if summary.get("kwh") is not None:
        lines.append(
            "⚡ " + kwh_text(config, summary["kwh"], summary.get("cost", 0.0), summary["estimated"])
        )
    shared = summary.get("shared_with") or []
    if shared:
        others = ", ".join(html.escape(name) for name in shared[:5])
        lines.append(
            _("👥 shared its cards with {runs} meanwhile: the energy is the cards' total").format(
                runs=others
            )
        )
    return "\n".join(lines)


def _where(run: Run) -> str:
    return _("🖥 rig {rig} · {cards}").format(
        rig=html.escape(run.rig), cards=html.escape(cards_text(run))
    )


def _same_day(config: Config, a: float, b: float) -> bool:
    """Whether the end needs its date (False when it is the start's local day)."""
    return local_text(config, a)[:10] != local_text(config, b)[:10]
