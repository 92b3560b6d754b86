"""Turning alerts into Telegram HTML: the default message layout or a user's Jinja2 template,
splitting text that is too long without cutting a tag or an entity, and packing a backlog of
alerts into as few messages as the length limit allows.

Lengths are counted the way Telegram counts them: UTF-16 code units of the text left after the
HTML is parsed (links' targets and tags do not count; an emoji outside the BMP counts twice).
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from html.parser import HTMLParser

from alert_bot.config import ConfigError
from alert_bot.i18n import N_, _, format_duration, format_time, language
from alert_bot.units import Unit
from alert_bot.webhook import parse_time

# The tags Telegram's HTML parse mode understands.
TELEGRAM_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
SEVERITY_MARKERS = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_MARKER = "✅"
TRUNCATED_NOTE = N_("…(truncated)")
SEPARATOR = "\n\n"
CONTINUED_TITLE_CHARS = 60


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _Tokenizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tokens: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tokens.append(("start", tag, self.get_starttag_text() or f"<{tag}>"))

    def handle_endtag(self, tag):
        self.tokens.append(("end", tag, f"</{tag}>"))

    def handle_data(self, data):
        self.tokens.append(("text", "", data))

    def handle_entityref(self, name):
        self.tokens.append(("text", "", html.unescape(f"&{name};")))

    def handle_charref(self, name):
        self.tokens.append(("text", "", html.unescape(f"&#{name};")))


def tokenize(markup: str) -> list[tuple[str, str, str]]:
    """(kind, tag, raw-or-text) tokens; text tokens hold the unescaped characters."""
    parser = _Tokenizer()
    parser.feed(markup)
    parser.close()
    return parser.tokens


def visible_text(markup: str) -> str:
    return "".join(value for kind, _, value in tokenize(markup) if kind == "text")


def visible_length(markup: str) -> int:
    return utf16_len(visible_text(markup))


def to_plain_text(markup: str) -> str:
    """The message as plain text, for the fallback when Telegram rejects the HTML."""
    return visible_text(markup)


def check_markup(markup: str) -> str | None:
    """None when Telegram would accept the HTML, else what is wrong."""
    stack: list[str] = []
    for kind, tag, _raw in tokenize(markup):
        if kind == "start":
            if tag not in TELEGRAM_TAGS:
                return f"tag <{tag}> is not supported by Telegram"
            stack.append(tag)
        elif kind == "end":
            if not stack or stack[-1] != tag:
                return f"unbalanced </{tag}>"
            stack.pop()
    if stack:
        return f"<{stack[-1]}> is never closed"
    return None


def _take_prefix(text: str, room: int) -> str:
    """The longest prefix of text within room UTF-16 units, preferring a line or word break."""
    used = 0
    end = 0
    for index, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > room:
            break
        used += width
        end = index + 1
    if end < len(text):
        window_start = max(0, end - 200)
        for breaker in ("\n", " "):
            cut = text.rfind(breaker, window_start, end)
            if cut > 0:
                return text[: cut + 1]
    return text[:end]


def split_html(markup: str, budget: int) -> list[str]:
    """Pieces of at most budget visible characters each; tags open at a cut are closed at its
    end and reopened at the next piece's start, and text is cut only between characters."""
    if budget < 1:
        raise ValueError("budget must be positive")
    pieces: list[str] = []
    current: list[str] = []
    current_len = 0
    open_tags: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal current, current_len
        if current_len > 0:
            closing = "".join(f"</{tag}>" for tag, _ in reversed(open_tags))
            pieces.append("".join(current) + closing)
        current = [raw for _, raw in open_tags]
        current_len = 0

    for kind, tag, value in tokenize(markup):
        if kind == "start":
            current.append(value)
            open_tags.append((tag, value))
        elif kind == "end":
            current.append(value)
            for position in range(len(open_tags) - 1, -1, -1):
                if open_tags[position][0] == tag:
                    del open_tags[position]
                    break
        else:
            text = value
            while text:
                room = budget - current_len
                if room <= 0:
                    flush()
                    room = budget
                chunk = _take_prefix(text, room)
                if not chunk and current_len == 0:
                    chunk = text[0]  # a character wider than the whole budget: it must go
                elif not chunk:
                    flush()
                    continue
                current.append(html.escape(chunk, quote=False))
                current_len += utf16_len(chunk)
                text = text[len(chunk) :]
    if current_len > 0:
        closing = "".join(f"</{tag}>" for tag, _ in reversed(open_tags))
        pieces.append("".join(current) + closing)
    return pieces


def _valid_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = parse_time(text)
    except ValueError:
        return None
    # Alertmanager writes the zero time 0001-01-01 for "not ended".
    return moment if moment.year > 1970 else None


@dataclass(frozen=True)
class LinkSettings:
    grafana_url: str
    dashboard_uid: str
    alertmanager_url: str


def matcher_text(matcher: dict) -> str:
    """One Alertmanager matcher as written in its own syntax: name, operator, value. The
    operator comes from isEqual/isRegex; without it "alertname!~A|B" would read as its opposite."""
    equal = matcher.get("isEqual", True)
    operator = ("=~" if equal else "!~") if matcher.get("isRegex") else ("=" if equal else "!=")
    return f"{matcher.get('name')}{operator}{matcher.get('value')}"


def matchers_text(matchers: list[dict]) -> str:
    return ", ".join(matcher_text(m) for m in matchers)


def silence_matchers(labels: dict[str, str]) -> list[dict]:
    return [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in sorted(labels.items())
    ]


# The silences a button offers, and how long each lasts (seconds).
SILENCE_DURATIONS = {"1h": 3600, "4h": 4 * 3600, "24h": 24 * 3600}


def silence_length(key: str) -> str:
    """A silence button's length in words ("4h")."""
    return _("{hours}h").format(hours=SILENCE_DURATIONS[key] // 3600)


PLACE_LABELS = ("rig", "instance", "gpu")
PLACE_WORDS = {"rig": N_("rig"), "instance": N_("instance"), "gpu": N_("gpu")}


def alert_place(labels: dict[str, str], keys: tuple[str, ...] = PLACE_LABELS) -> list[str]:
    """Where an alert is ("rig rig1", "instance host:9835", "gpu 0"), as the bot names it in
    /alerts, chart captions and the descriptions of silence buttons. An instance named like its
    rig (a pushing rig's) says nothing the rig does not, and is left out."""
    return [
        _(PLACE_WORDS.get(key, key)) + " " + labels[key]
        for key in keys
        if labels.get(key) and not (key == "instance" and labels[key] == labels.get("rig"))
    ]


SILENCE_URL_MAX_CHARS = 2000
IDENTIFYING_LABELS = ("alertname", "rig", "instance", "gpu", "severity")


def alertmanager_silence_url(base: str, labels: dict[str, str]) -> str:
    """A link to Alertmanager's new-silence form, filled with the alert's labels; with only the
    identifying ones when all of them would make a URL too long for a message request."""

    def url(chosen: dict[str, str]) -> str:
        matchers = ",".join(f'{name}="{value}"' for name, value in sorted(chosen.items()))
        filter_text = urllib.parse.quote("{" + matchers + "}")
        return f"{base.rstrip('/')}/#/silences/new?filter=" + filter_text

    full = url(labels)
    if len(full) <= SILENCE_URL_MAX_CHARS:
        return full
    short = url({k: v for k in IDENTIFYING_LABELS if 0 < len(v := labels.get(k, "")) <= 200})
    return short if len(short) <= SILENCE_URL_MAX_CHARS else url({})


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
    alert_bot.current), a full resolved notice says what the alert's value is now; templates
    get it as now_value. With began (when an alert's condition began, see alert_bot.current),
    "since" and "lasted" count from then, the rule's `for:` wait included; without an answer,
    from Alertmanager's startsAt."""

    def __init__(
        self,
        links: LinkSettings,
        template_source: str | None = None,
        zone: tzinfo | None = None,
        current: Callable[[dict], tuple[Unit, float] | None] | None = None,
        began: Callable[[dict], float | None] | None = None,
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
        sample = {
            "status": "firing",
            "labels": {"alertname": "Sample <&>", "severity": "critical", "rig": "rig1"},
            "annotations": {"summary": "sample & <summary>", "description": "d"},
            "startsAt": "2024-01-01T00:00:00Z",
            "endsAt": "",
            "generatorURL": "",
            "fingerprint": "f",
        }
        try:
            output = self.render(sample, {"externalURL": ""}, compact=False, now=0.0)
        except Exception as exc:  # noqa: BLE001 - any template bug is a config problem
            raise ConfigError("template", f"fails to render a sample alert: {exc}") from None
        problem = check_markup(output)
        if problem:
            raise ConfigError("template", f"produces HTML Telegram rejects: {problem}")
        if not visible_text(output).strip():
            raise ConfigError("template", "renders an empty message")

    def began_at(self, alert: dict) -> float | None:
        """When the alert's trouble began: Prometheus's activeAt where it can say, else
        Alertmanager's startsAt (None when neither is a time)."""
        fired = _valid_time(alert.get("startsAt", ""))
        if fired is None:
            return None
        began = self.began(alert) if self.began is not None else None
        return min(began, fired.timestamp()) if began is not None else fired.timestamp()

    def context(self, alert: dict, notification: dict, now: float) -> dict:
        labels = alert["labels"]
        annotations = alert.get("annotations", {})
        status = alert["status"]
        severity = labels.get("severity", "")
        began = self.began_at(alert)
        started = datetime.fromtimestamp(began, timezone.utc) if began is not None else None
        ended = _valid_time(alert.get("endsAt", "")) if status == "resolved" else None
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
        base_am = notification.get("externalURL") or self.links.alertmanager_url
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
            "alert": alert,
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
            "generator_url": alert.get("generatorURL", ""),
        }

    def render(self, alert: dict, notification: dict, compact: bool, now: float) -> str:
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


def annotation(annotations: dict[str, str], key: str) -> str:
    """An alert's annotation in the bot's language: `<key>_<language>` (summary_ru) where the
    rule has one, else the rule's own (English) `<key>`."""
    return annotations.get(f"{key}_{language()}") or annotations.get(key, "")


@dataclass
class Block:
    """A piece of a message: one alert (or one part of a long alert, or a notice)."""

    html: str
    length: int
    notification_id: int
    alert_index: int
    completes_alert: bool
    alert: dict | None = None
    notification: dict | None = None
    part_index: int = 0


@dataclass
class OutgoingMessage:
    html: str
    blocks: list[Block] = field(default_factory=list)
    compact: bool = False

    @property
    def alerts(self) -> list[dict]:
        return [b.alert for b in self.blocks if b.alert is not None and b.completes_alert]


def blocks_for(
    markup: str,
    notification_id: int,
    alert_index: int,
    budget: int,
    max_parts: int,
    alert: dict | None = None,
    notification: dict | None = None,
    title: str = "",
) -> list[Block]:
    """One block, or several when the markup is longer than a message; never more than
    max_parts, the last then ending in a visible truncation note."""
    length = visible_length(markup)
    if length <= budget:
        return [Block(markup, length, notification_id, alert_index, True, alert, notification)]
    # The title is a label value of any length: shortened, so the note leaves room for text.
    if len(title) > CONTINUED_TITLE_CHARS:
        title = title[: CONTINUED_TITLE_CHARS - 1] + "…"
    bare = "<i>" + _("(continued)") + "</i>\n"
    continued = (
        "<i>" + _("(continued: {title})").format(title=html.escape(title)) + "</i>\n"
        if title
        else bare
    )
    note = "\n" + _(TRUNCATED_NOTE)
    if visible_length(continued) > budget // 4:  # a small budget: the text needs the room
        continued = bare
    inner_budget = budget - visible_length(continued) - utf16_len(note)
    pieces = split_html(markup, inner_budget)
    if len(pieces) > max_parts:
        pieces = pieces[:max_parts]
        pieces[-1] = pieces[-1] + html.escape(note)
    blocks = []
    for number, piece in enumerate(pieces):
        text = piece if number == 0 else continued + piece
        blocks.append(
            Block(
                text,
                visible_length(text),
                notification_id,
                alert_index,
                number == len(pieces) - 1,
                alert,
                notification,
                number,
            )
        )
    return blocks


def pack(blocks: list[Block], budget: int, compact: bool = False) -> list[OutgoingMessage]:
    """Greedy packing in order: each message takes blocks while the total fits. Compact
    (one-line) blocks are separated by a line break, full ones by an empty line."""
    messages: list[OutgoingMessage] = []
    current: list[Block] = []
    used = 0
    joiner = "\n" if compact else SEPARATOR
    separator = utf16_len(joiner)
    for block in blocks:
        extra = block.length + (separator if current else 0)
        if current and used + extra > budget:
            messages.append(OutgoingMessage(joiner.join(b.html for b in current), current, compact))
            current, used = [], 0
            extra = block.length
        current.append(block)
        used += extra
    if current:
        messages.append(OutgoingMessage(joiner.join(b.html for b in current), current, compact))
    return messages
