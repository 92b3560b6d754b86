"""Turning alerts into Telegram HTML: the default message layout or a user's Jinja2 template,
splitting text that is too long without cutting a tag or an entity, and packing a backlog of
alerts into as few messages as the length limit allows.

Lengths are counted the way Telegram counts them: UTF-16 code units of the text left after the
HTML is parsed (links' targets and tags do not count; an emoji outside the BMP counts twice).
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from alert_bot.alerts.model import Alert, Notification, valid_time
from alert_bot.alerts.silences import alertmanager_silence_url
from alert_bot.config import ConfigError
from alert_bot.i18n import N_, _, format_duration, format_time, language
from alert_bot.telegram.html import check_markup, visible_text
from alert_bot.upstream.units import Unit

SEVERITY_MARKERS = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_MARKER = "✅"


@dataclass(frozen=True)
class LinkSettings:
    grafana_url: str
    dashboard_uid: str
    alertmanager_url: str


PLACE_LABELS = ("rig", "instance", "gpu")
PLACE_WORDS = {"rig": N_("rig"), "instance": N_("instance"), "gpu": N_("gpu")}


def alert_place(labels: Mapping[str, str], keys: tuple[str, ...] = PLACE_LABELS) -> list[str]:
    """Where an alert is ("rig rig1", "instance host:9835", "gpu 0"), as the bot names it in
    /alerts, chart captions and the descriptions of silence buttons. An instance named like its
    rig (a pushing rig's) says nothing the rig does not, and is left out."""
    return [
        _(PLACE_WORDS.get(key, key)) + " " + labels[key]
        for key in keys
        if labels.get(key) and not (key == "instance" and labels[key] == labels.get("rig"))
    ]


def value_words(unit: Unit, value: float) -> str:
    """A value as a resolved notice says it now: "70 °C", "80 %", "active: no"."""
    if unit.state and value in (0, 1):
        answer = _("yes") if value else _("no")
        return f"{unit.quantity.removesuffix(' (1 = yes)')}: {answer}"
    return unit.format(value)


def now_line(value: str) -> str:
    return _("Now: {value}").format(value=value)


class AlertRenderer:
    """Renders one alert as an HTML block, by default layout or the user's template. Times are
    shown in the owner's zone. With current (the value now of a resolved alert, see
    alert_bot.alerts.current), a full resolved notice says what the alert's value is now; templates
    get it as now_value. With began (when an alert's condition began, see alert_bot.alerts.current),
    "since" and "lasted" count from then, the rule's `for:` wait included; without an answer,
    from Alertmanager's startsAt."""

    def __init__(
        self,
        links: LinkSettings,
        template_source: str | None = None,
        zone: tzinfo | None = None,
        current: Callable[[Alert], tuple[Unit, float] | None] | None = None,
        began: Callable[[Alert], float | None] | None = None,
    ):
        self.links = links
        self.zone = zone or timezone.utc  # times are shown in the owner's zone
        self.current = current
        self.began = began
        self.template = None
        if template_source is not None:
            import jinja2  # only with a user template: ~7 MiB the default layout does not need

            environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
            try:
                self.template = environment.from_string(template_source)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError("template", f"line {exc.lineno}: {exc.message}") from None
            self._check_template()

    def _check_template(self) -> None:
        sample = Alert(
            status="firing",
            labels={"alertname": "Sample <&>", "severity": "critical", "rig": "rig1"},
            annotations={"summary": "sample & <summary>", "description": "d"},
            starts_at="2024-01-01T00:00:00Z",
            fingerprint="f",
        )
        try:
            output = self.render(sample, Notification("firing", "", (sample,)), False, now=0.0)
        except Exception as exc:  # noqa: BLE001 - any template bug is a config problem
            raise ConfigError("template", f"fails to render a sample alert: {exc}") from None
        problem = check_markup(output)
        if problem:
            raise ConfigError("template", f"produces HTML Telegram rejects: {problem}")
        if not visible_text(output).strip():
            raise ConfigError("template", "renders an empty message")

    def began_at(self, alert: Alert) -> float | None:
        """When the alert's trouble began: Prometheus's activeAt where it can say, else
        Alertmanager's startsAt (None when neither is a time)."""
        fired = valid_time(alert.starts_at)
        if fired is None:
            return None
        began = self.began(alert) if self.began is not None else None
        return min(began, fired.timestamp()) if began is not None else fired.timestamp()

    def context(self, alert: Alert, notification: Notification, now: float) -> dict:
        """What the default layout and a user's template read. Templates see Alertmanager's
        own shape and names (alert.startsAt, labels.rig), as its webhook documents them."""
        labels = dict(alert.labels)
        annotations = dict(alert.annotations)
        status = alert.status
        severity = labels.get("severity", "")
        began = self.began_at(alert)
        started = datetime.fromtimestamp(began, timezone.utc) if began is not None else None
        ended = valid_time(alert.ends_at) if status == "resolved" else None
        if started and ended:
            duration = format_duration((ended - started).total_seconds())
        elif started:
            duration = format_duration(now - started.timestamp())
        else:
            duration = ""
        summary = annotation(annotations, "summary")
        description = annotation(annotations, "description")
        rig = labels.get("rig") or labels.get("instance", "")
        gpu = labels.get("gpu", "")
        gpu_name = labels.get("gpu_name") or labels.get("name", "")
        base_am = notification.external_url or self.links.alertmanager_url
        dashboard = annotations.get("dashboard_url") or annotations.get("dashboard", "")
        if dashboard and not dashboard.startswith(("http://", "https://")):
            dashboard = self.links.grafana_url.rstrip("/") + "/" + dashboard.lstrip("/")
        if not dashboard:
            query = {"var-rig": rig} if rig else {}
            if gpu:
                query["var-gpu"] = gpu
            if started:
                query["from"] = str(int(started.timestamp() * 1000) - 3600_000)
                query["to"] = str(int((ended.timestamp() if ended else now) * 1000) + 600_000)
            dashboard = f"{self.links.grafana_url.rstrip('/')}/d/{self.links.dashboard_uid}"
            if query:
                dashboard += "?" + urllib.parse.urlencode(query)
        return {
            "alert": alert.to_json(),
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "alertname": labels.get("alertname", ""),
            "severity": severity,
            "marker": RESOLVED_MARKER
            if status == "resolved"
            else SEVERITY_MARKERS.get(severity, "⚪"),
            "rig": rig,
            "gpu": gpu,
            "gpu_name": gpu_name,
            "summary": summary,
            "description": description,
            "since": format_time(started, self.zone) if started else "",
            "ended": format_time(ended, self.zone) if ended else "",
            "duration": duration,
            "dashboard_url": dashboard,
            "silence_url": alertmanager_silence_url(base_am, labels),
            "generator_url": alert.generator_url,
        }

    def render(self, alert: Alert, notification: Notification, compact: bool, now: float) -> str:
        ctx = self.context(alert, notification, now)
        ctx["now_value"] = ""
        if ctx["status"] == "resolved" and not compact and self.current is not None:
            measured = self.current(alert)
            if measured is not None:
                ctx["now_value"] = value_words(*measured)
        if self.template is not None:
            return self.template.render(compact=compact, **ctx).strip()
        return self._default(ctx, compact)

    @staticmethod
    def _default(ctx: dict, compact: bool) -> str:
        esc = html.escape
        resolved = ctx["status"] == "resolved"
        where = []
        labels = ctx["labels"]
        if labels.get("rig"):
            where.append(_("rig <b>{rig}</b>").format(rig=esc(ctx["rig"])))
        elif ctx["rig"]:
            # No rig label: the alert is about a target or the centre itself (e.g.
            # PrometheusTargetFileInvalid on localhost:9090); calling that a rig misleads.
            if labels.get("job"):
                where.append(_("job <b>{job}</b>").format(job=esc(labels["job"])))
            where.append(_("instance <b>{instance}</b>").format(instance=esc(ctx["rig"])))
        if ctx["gpu"]:
            card = _("GPU {gpu}").format(gpu=esc(ctx["gpu"]))
            if ctx["gpu_name"]:
                card += f" ({esc(ctx['gpu_name'])})"
            where.append(card)
        duration, since = ctx["duration"], ctx["since"]
        if resolved:
            when = _("lasted {duration}").format(duration=duration) if duration else _("resolved")
            if since:
                when += _(" (since {time})").format(time=since)
        else:
            when = _("since {time}").format(time=since) if since else ""
            if duration:
                when += _(" ({duration} ago)").format(duration=duration)
        if compact:
            line = f"{ctx['marker']} <b>{esc(ctx['alertname'])}</b>"
            if where:
                line += " · " + " · ".join(where)
            if ctx["summary"] and resolved:
                line += _(" — was: {summary}").format(summary=esc(ctx["summary"]))
            elif ctx["summary"]:
                line += f" — {esc(ctx['summary'])}"
            if resolved and duration:
                line += _(" (lasted {duration})").format(duration=duration)
            return line
        status_word = _("RESOLVED") if resolved else _("FIRING")
        head = f"{ctx['marker']} <b>{status_word}</b>"
        if ctx["severity"]:
            head += f" · {esc(ctx['severity'])}"
        head += f" · <b>{esc(ctx['alertname'])}</b>"
        lines = [head]
        if where:
            lines.append("🖥 " + " · ".join(where))
        if resolved:
            # The summary is what Prometheus last saw while it fired, in the present tense, and
            # the description is what to do about it: neither is true any more.
            if ctx["ended"]:
                line = _("No longer true at {time}").format(time=ctx["ended"])
            else:
                line = _("No longer true")
            if ctx["summary"]:
                line += _("; while firing: <i>{summary}</i>").format(summary=esc(ctx["summary"]))
            lines.append(line)
            if ctx["now_value"]:
                lines.append(esc(now_line(ctx["now_value"])))
        else:
            if ctx["summary"]:
                lines.append(esc(ctx["summary"]))
            if ctx["description"] and ctx["description"] != ctx["summary"]:
                lines.append(f"<i>{esc(ctx['description'])}</i>")
        if when:
            lines.append("🕒 " + esc(when))
        link = '<a href="{url}">{text}</a>'
        links = [link.format(url=esc(ctx["dashboard_url"]), text=_("📈 dashboard"))]
        if not resolved:
            silence = _("🔕 silence in Alertmanager")
            links.append(link.format(url=esc(ctx["silence_url"]), text=silence))
        lines.append(" · ".join(links))
        return "\n".join(lines)


def annotation(annotations: Mapping[str, str], key: str) -> str:
    """An alert's annotation in the bot's language: `<key>_<language>` (summary_ru) where the
    rule has one, else the rule's own (English) `<key>`."""
    return annotations.get(f"{key}_{language()}") or annotations.get(key, "")
