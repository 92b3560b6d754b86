"""The chat side of the bot: the Telegram update loop, commands (/status, /gpu, /cpu, /alerts,
/silences, /graph, ...) and the silence/unsilence buttons."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import time
from collections.abc import Callable

from alert_bot.charts import query_chart
from alert_bot.config import Config, ConfigError, parse_duration
from alert_bot.loop import BotLoop
from alert_bot.metrics import BotMetrics
from alert_bot.ratelimit import FloodLimiter
from alert_bot.render import SEVERITY_MARKERS, silence_matchers, split_html
from alert_bot.store import Store, StoreError
from alert_bot.telegram import Button, TelegramClient, TelegramError
from alert_bot.upstream import AlertmanagerClient, PrometheusClient, UpstreamError

log = logging.getLogger("alert_bot.commands")

COMMANDS = [
    ("start", "this chat's id and whether it may use the bot"),
    ("help", "what the bot can do"),
    ("status", "every rig: cards, host and firing alerts"),
    ("gpu", "GPU temperatures, load, memory, power, fans [rig]"),
    ("cpu", "host CPU temperature, load, memory, disk [rig]"),
    ("alerts", "firing alerts, with silence buttons"),
    ("silences", "active silences, with unsilence buttons"),
    ("graph", "chart: gpu|cpu|mem|disk|PromQL [1h|6h|24h|7d]"),
]
PUBLIC_COMMANDS = {"start", "help"}
SILENCE_SECONDS = {"1h": 3600, "4h": 4 * 3600, "24h": 24 * 3600}
GRAPHS = {
    "gpu": ("rigwatch_gpu_temperature_celsius", "GPU temperature (°C)"),
    "cpu": (
        '1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total{mode="idle"}[2m]))',
        "CPU busy (ratio)",
    ),
    "mem": (
        "1 - rigwatch_host_memory_available_bytes / rigwatch_host_memory_total_bytes",
        "memory used (ratio)",
    ),
    "disk": (
        '1 - rigwatch_host_filesystem_avail_bytes{mountpoint="/"}'
        ' / rigwatch_host_filesystem_size_bytes{mountpoint="/"}',
        "root filesystem used (ratio)",
    ),
}
CPU_CHIPS = re.compile(r"coretemp|k10temp|zenpower|cpu|acpitz|soc", re.IGNORECASE)
REFUSAL = "Sorry, only the people this bot is set up for can do that."
SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,62}")
OFFSET_STATE = "telegram_update_offset"
GIB = 1024**3


def rig_of(metric: dict[str, str]) -> str:
    return metric.get("rig") or metric.get("instance", "?")


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


class ChatCommands(BotLoop):
    thread_name = "telegram-updates"
    # A long poll in flight cannot be interrupted; the thread is a daemon, and updates not yet
    # confirmed come again at the next start.
    join_timeout = 3.0

    def __init__(
        self,
        config: Config,
        store: Store,
        telegram: TelegramClient,
        prometheus: PrometheusClient,
        alertmanager: AlertmanagerClient,
        metrics: BotMetrics,
        limiter: FloodLimiter,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(config, store, metrics, clock)
        self.telegram = telegram
        self.prometheus = prometheus
        self.alertmanager = alertmanager
        self.limiter = limiter
        self.offset: int | None = None
        with contextlib.suppress(StoreError, ValueError):
            saved = store.state.get(OFFSET_STATE)
            self.offset = int(saved) if saved else None
        self.commands_registered = False

    def may_use(self, chat_id: int, user_id: int | None) -> bool:
        """The configured access, also for an allowed group that became a supergroup since
        (the configuration still names its old id)."""
        if self.config.may_use(chat_id, user_id):
            return True
        return any(
            self.config.may_use(old, user_id) for old in self.store.migrations.former_ids(chat_id)
        )

    # --- the update loop --------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.commands_registered:
                    self.telegram.set_commands(COMMANDS)
                    self.commands_registered = True
                updates = self.telegram.get_updates(self.offset, self.config.long_poll_timeout)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                failures += 1
                delay = min(2 ** min(failures, 6), 60) * 0.5
                if isinstance(exc, TelegramError):
                    log.warning("Telegram updates failed (%s); retrying in %.1fs", exc, delay)
                else:
                    log.exception("Telegram updates failed; retrying in %.1fs", delay)
                self._stop.wait(delay)
                continue
            for update in updates:
                self.offset = update["update_id"] + 1
                # Telegram forgets an update only when the next poll names a later offset; a
                # bot stopped before that poll would replay it (a button press silencing twice)
                # unless the offset survives the restart.
                try:
                    self.store.state.set(OFFSET_STATE, str(self.offset))
                except StoreError as exc:
                    log.warning("could not keep the update offset: %s", exc)
                try:
                    self.handle_update(update)
                except Exception:  # noqa: BLE001 - one bad update must not stop the loop
                    log.exception("handling update %s failed", update.get("update_id"))

    def handle_update(self, update: dict) -> None:
        if "callback_query" in update:
            self.handle_callback(update["callback_query"])
        elif "message" in update:
            self.handle_message(update["message"])

    # --- replies ----------------------------------------------------------------------------

    def reply(
        self,
        message: dict,
        text: str,
        buttons: list[list[Button]] | None = None,
    ) -> int | None:
        chat_id = message["chat"]["id"]
        thread_id = message.get("message_thread_id") if message.get("is_topic_message") else None
        last_id = None
        pieces = split_html(text, 4000) or ["…"]
        for number, piece in enumerate(pieces):
            slot = self.limiter.reserve(chat_id, self._stop, limit=60)
            if slot is None:
                return last_id
            try:
                last_id = self.telegram.send_message(
                    chat_id,
                    piece,
                    True,
                    thread_id,
                    buttons if number == len(pieces) - 1 else None,
                )
            except TelegramError as exc:
                log.warning("reply to chat %s failed: %s", chat_id, exc)
                return last_id
            finally:
                slot.finish()
        return last_id

    def reply_photo(self, message: dict, png: bytes, caption: str) -> None:
        chat_id = message["chat"]["id"]
        thread_id = message.get("message_thread_id") if message.get("is_topic_message") else None
        slot = self.limiter.reserve(chat_id, self._stop, limit=60)
        if slot is None:
            return
        try:
            self.telegram.send_photo(chat_id, png, caption, True, thread_id)
        except TelegramError as exc:
            log.warning("chart to chat %s failed: %s", chat_id, exc)
        finally:
            slot.finish()

    # --- messages and commands --------------------------------------------------------------

    def handle_message(self, message: dict) -> None:
        chat_id = message["chat"]["id"]
        if message.get("migrate_to_chat_id"):
            self.store.migrations.record(chat_id, int(message["migrate_to_chat_id"]), self.clock())
            return
        text = (message.get("text") or "").strip()
        if not text:
            return
        words = text.split()
        first = words[0].lower()
        if first.startswith("/"):
            command = first[1:].split("@", 1)[0]
        elif first in ("gpu", "cpu"):
            command = first
        else:
            return
        args = words[1:]
        known = {name for name, _ in COMMANDS}
        if command not in known:
            if "@" not in first:  # "/x@other_bot" in a group is another bot's business
                self.reply(message, "Unknown command. /help lists what I can do.")
            return
        user_id = (message.get("from") or {}).get("id")
        if command not in PUBLIC_COMMANDS and not self.may_use(chat_id, user_id):
            self.metrics.commands.labels("refused").inc()
            self.reply(
                message,
                "Sorry, this chat is not allowed to use rigwatch. Its id is "
                f"<code>{chat_id}</code>: add it to <code>access.allowed_chat_ids</code> in the "
                "bot's configuration if it should be.",
            )
            return
        self.metrics.commands.labels(command).inc()
        handler = getattr(self, f"cmd_{command}")
        try:
            handler(message, args)
        except UpstreamError as exc:
            self.reply(message, f"⚠️ {html.escape(str(exc))}")

    def cmd_start(self, message: dict, args: list[str]) -> None:
        chat_id = message["chat"]["id"]
        user_id = (message.get("from") or {}).get("id")
        allowed = self.may_use(chat_id, user_id)
        text = f"👋 This is rigwatch. This chat's id is <code>{chat_id}</code>"
        if user_id is not None:
            text += f", yours is <code>{user_id}</code>"
        text += ".\n"
        if allowed:
            text += "✅ This chat is allowed to use the bot. /help lists the commands."
        else:
            text += (
                "⛔ This chat is not allowed to use the bot. To make it the default chat, put "
                f"<code>TELEGRAM_CHAT_ID={chat_id}</code> in the bot's .env."
            )
        self.reply(message, text)

    def cmd_help(self, message: dict, args: list[str]) -> None:
        lines = ["<b>rigwatch bot</b>"]
        lines += [f"/{name} — {html.escape(text)}" for name, text in COMMANDS]
        lines.append("Writing just <code>gpu</code> or <code>cpu</code> works too.")
        self.reply(message, "\n".join(lines))

    # --- data from Prometheus ---------------------------------------------------------------

    def _by_card(self, expr: str) -> dict[tuple[str, str], float]:
        return {
            (rig_of(r["metric"]), r["metric"].get("gpu", "")): r["value"]
            for r in self.prometheus.query(expr)
        }

    def _by_rig(self, expr: str) -> dict[str, float]:
        return {rig_of(r["metric"]): r["value"] for r in self.prometheus.query(expr)}

    @staticmethod
    def _wanted(rig: str, wanted: str | None) -> bool:
        return wanted is None or rig == wanted or rig.split(":")[0] == wanted

    def gpu_lines(self, wanted: str | None) -> dict[str, list[str]]:
        temps = self._by_card("rigwatch_gpu_temperature_celsius")
        up = self._by_card("rigwatch_gpu_up")
        util = self._by_card("rigwatch_gpu_utilization_ratio")
        used = self._by_card("rigwatch_gpu_memory_used_bytes")
        total = self._by_card("rigwatch_gpu_memory_total_bytes")
        power = self._by_card("rigwatch_gpu_power_watts")
        limit = self._by_card("rigwatch_gpu_power_limit_watts")
        fan = self._by_card("avg without (fan) (rigwatch_gpu_fan_speed_ratio)")
        names = {
            (rig_of(r["metric"]), r["metric"].get("gpu", "")): r["metric"].get("name", "")
            for r in self.prometheus.query("rigwatch_gpu_info")
        }
        cards = sorted(
            {*temps, *up, *names},
            key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0, k[1]),
        )
        result: dict[str, list[str]] = {}
        for key in cards:
            rig, gpu = key
            if not self._wanted(rig, wanted):
                continue
            line = f"GPU {html.escape(gpu)}"
            if names.get(key):
                line += f" · {html.escape(names[key])}"
            if up.get(key) == 0:
                result.setdefault(rig, []).append(line + ": ❌ lost / unreachable")
                continue
            parts = []
            if key in temps:
                parts.append(f"🌡 {temps[key]:.0f} °C")
            if key in util:
                parts.append(f"util {_pct(util[key])}")
            if key in used and key in total and total[key] > 0:
                parts.append(f"mem {used[key] / GIB:.1f}/{total[key] / GIB:.1f} GiB")
            if key in power:
                watts = f"{power[key]:.0f}"
                if key in limit:
                    watts += f"/{limit[key]:.0f}"
                parts.append(f"{watts} W")
            if key in fan:
                parts.append(f"fan {_pct(fan[key])}")
            result.setdefault(rig, []).append(line + ": " + " · ".join(parts))
        return result

    def host_lines(self, wanted: str | None) -> dict[str, str]:
        temps: dict[str, float] = {}
        any_temps: dict[str, float] = {}
        for r in self.prometheus.query("rigwatch_host_temperature_celsius"):
            rig = rig_of(r["metric"])
            any_temps[rig] = max(any_temps.get(rig, r["value"]), r["value"])
            if CPU_CHIPS.search(r["metric"].get("chip", "")):
                temps[rig] = max(temps.get(rig, r["value"]), r["value"])
        busy = self._by_rig(
            '1 - avg by (rig, instance) (rate(rigwatch_host_cpu_seconds_total{mode="idle"}[2m]))'
        )
        load = self._by_rig("rigwatch_host_load1")
        mem_total = self._by_rig("rigwatch_host_memory_total_bytes")
        mem_avail = self._by_rig("rigwatch_host_memory_available_bytes")
        disks: dict[str, tuple[str, float]] = {}
        for r in self.prometheus.query(
            "1 - rigwatch_host_filesystem_avail_bytes / rigwatch_host_filesystem_size_bytes"
        ):
            rig = rig_of(r["metric"])
            mount = r["metric"].get("mountpoint", "?")
            current = disks.get(rig)
            if mount == "/" or current is None or (current[0] != "/" and r["value"] > current[1]):
                disks[rig] = (mount, r["value"])
        result = {}
        for rig in sorted({*any_temps, *busy, *load, *mem_total, *disks}):
            if not self._wanted(rig, wanted):
                continue
            parts = []
            temp = temps.get(rig, any_temps.get(rig))
            if temp is not None:
                parts.append(f"CPU 🌡 {temp:.0f} °C")
            if rig in busy:
                parts.append(f"busy {_pct(busy[rig])}")
            if rig in load:
                parts.append(f"load {load[rig]:.2f}")
            if rig in mem_total and rig in mem_avail and mem_total[rig] > 0:
                used = mem_total[rig] - mem_avail[rig]
                total_gib = mem_total[rig] / GIB
                parts.append(
                    f"mem {_pct(used / mem_total[rig])} ({used / GIB:.1f}/{total_gib:.1f} GiB)"
                )
            if rig in disks:
                parts.append(f"disk {html.escape(disks[rig][0])} {_pct(disks[rig][1])}")
            result[rig] = " · ".join(parts)
        return result

    def _no_data(self, message: dict, wanted: str | None) -> None:
        where = f" for rig {html.escape(wanted)}" if wanted else ""
        self.reply(
            message,
            f"No data from Prometheus{where}. Is the exporter running and scraped?",
        )

    def cmd_gpu(self, message: dict, args: list[str]) -> None:
        wanted = args[0] if args else None
        cards = self.gpu_lines(wanted)
        if not cards:
            self._no_data(message, wanted)
            return
        blocks = [
            f"🖥 <b>{html.escape(rig)}</b>\n" + "\n".join(lines) for rig, lines in cards.items()
        ]
        self.reply(message, "\n\n".join(blocks))

    def cmd_cpu(self, message: dict, args: list[str]) -> None:
        wanted = args[0] if args else None
        hosts = self.host_lines(wanted)
        if not hosts:
            self._no_data(message, wanted)
            return
        self.reply(
            message,
            "\n".join(f"🖥 <b>{html.escape(rig)}</b>: {line}" for rig, line in hosts.items()),
        )

    def cmd_status(self, message: dict, args: list[str]) -> None:
        wanted = args[0] if args else None
        cards = self.gpu_lines(wanted)
        hosts = self.host_lines(wanted)
        try:
            alerts = self.alertmanager.alerts()
            alert_error = None
        except UpstreamError as exc:
            alerts, alert_error = [], str(exc)
        rigs = sorted({*cards, *hosts})
        if not rigs:
            self._no_data(message, wanted)
            return
        blocks = []
        for rig in rigs:
            lines = [f"🖥 <b>{html.escape(rig)}</b>"]
            if rig in hosts:
                lines.append(hosts[rig])
            lines += cards.get(rig, [])
            firing = [a for a in alerts if rig_of(a.get("labels", {})) == rig]
            for alert in firing:
                labels = alert.get("labels", {})
                marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
                gpu = f" GPU {labels['gpu']}" if labels.get("gpu") else ""
                lines.append(f"{marker} {html.escape(labels.get('alertname', '?') + gpu)}")
            if not firing and not alert_error:
                lines.append("✅ no firing alerts")
            blocks.append("\n".join(lines))
        other = [a for a in alerts if rig_of(a.get("labels", {})) not in rigs]
        if other and wanted is None:
            blocks.append(
                "Other firing alerts: "
                + html.escape(", ".join(sorted({a["labels"].get("alertname", "?") for a in other})))
            )
        if alert_error:
            blocks.append(f"⚠️ {html.escape(alert_error)}")
        self.reply(message, "\n\n".join(blocks))

    def cmd_graph(self, message: dict, args: list[str]) -> None:
        if not args:
            self.reply(message, "Usage: /graph gpu|cpu|mem|disk|&lt;PromQL&gt; [1h|6h|24h|7d]")
            return
        seconds = 3600.0
        range_text = "1h"
        if len(args) > 1 and re.fullmatch(r"\d+[mhd]", args[-1]):
            try:
                seconds = min(parse_duration("range", args[-1]), 30 * 86400)
                range_text = args[-1]
                args = args[:-1]
            except ConfigError:
                pass
        what = " ".join(args)
        expr, title = GRAPHS.get(what.lower(), (what, what))
        try:
            png = query_chart(
                self.prometheus, expr, seconds, self.clock(), f"{title} — last {range_text}"
            )
        except ValueError:
            self.reply(
                message, f"No data for <code>{html.escape(what)}</code> in the last {range_text}."
            )
            return
        self.reply_photo(message, png, f"📈 {html.escape(title)} — last {html.escape(range_text)}")

    # --- Alertmanager -----------------------------------------------------------------------

    def cmd_alerts(self, message: dict, args: list[str]) -> None:
        alerts = self.alertmanager.alerts()
        if not alerts:
            self.reply(message, "✅ No firing alerts.")
            return
        lines = [f"<b>{len(alerts)} firing alert(s)</b>"]
        buttons: list[list[Button]] = []
        now = self.clock()
        for number, alert in enumerate(alerts[:30], start=1):
            labels = alert.get("labels", {})
            marker = SEVERITY_MARKERS.get(labels.get("severity", ""), "⚪")
            where = " · ".join(
                html.escape(f"{k} {labels[k]}") for k in ("rig", "instance", "gpu") if labels.get(k)
            )
            summary = alert.get("annotations", {}).get("summary", "")
            line = f"{number}. {marker} <b>{html.escape(labels.get('alertname', '?'))}</b>"
            if where:
                line += f" · {where}"
            if summary:
                line += f" — {html.escape(summary)}"
            lines.append(line)
            if number <= 10:
                short_id = self.store.buttons.save(
                    silence_matchers(labels), f"{labels.get('alertname', '?')} {where}", now
                )
                buttons.append(
                    [Button(f"#{number} 🔕 {d}", f"s:{short_id}:{d}") for d in SILENCE_SECONDS]
                )
        if len(alerts) > 30:
            lines.append(f"… and {len(alerts) - 30} more")
        self.reply(message, "\n".join(lines), buttons)

    def cmd_silences(self, message: dict, args: list[str]) -> None:
        silences = self.alertmanager.silences()
        if not silences:
            self.reply(message, "No active silences.")
            return
        lines = [f"<b>{len(silences)} active silence(s)</b>"]
        buttons = []
        for number, silence in enumerate(silences[:30], start=1):
            matchers = ", ".join(
                f"{m['name']}{'=~' if m.get('isRegex') else '='}{m['value']}"
                for m in silence.get("matchers", [])
            )
            until = silence.get("endsAt", "")[:16].replace("T", " ")
            line = f"{number}. <code>{html.escape(matchers)}</code> until {html.escape(until)} UTC"
            if silence.get("createdBy"):
                line += f" by {html.escape(silence['createdBy'])}"
            if silence.get("comment"):
                line += f": {html.escape(silence['comment'][:200])}"
            lines.append(line)
            if number <= 10:
                buttons.append([Button(f"#{number} 🔔 unsilence", f"u:{silence['id']}")])
        self.reply(message, "\n".join(lines), buttons)

    # --- buttons ----------------------------------------------------------------------------

    def handle_callback(self, query: dict) -> None:
        data = query.get("data") or ""
        user = query.get("from") or {}
        message = query.get("message") or {}
        chat_id = (message.get("chat") or {}).get("id", user.get("id"))
        if not self.may_use(chat_id, user.get("id")):
            self.metrics.commands.labels("refused").inc()
            self._answer(query, REFUSAL, alert=True)
            return
        who = user.get("username") or user.get("first_name") or str(user.get("id", "someone"))
        try:
            if data.startswith("s:"):
                self._silence(query, data, who, message)
            elif data.startswith("u:"):
                self._unsilence(query, data[2:], who, message)
            else:
                self._answer(query, "This button is not one of mine.")
        except UpstreamError as exc:
            self._answer(query, f"Alertmanager did not do it: {exc}", alert=True)
        except StoreError:
            self._answer(query, "The bot's store is unavailable; try again later.", alert=True)

    def _answer(self, query: dict, text: str, alert: bool = False) -> None:
        try:
            self.telegram.answer_callback(query["id"], text, alert)
        except TelegramError as exc:
            log.warning("answering a button press failed: %s", exc)

    def _silence(self, query: dict, data: str, who: str, message: dict) -> None:
        parts = data.split(":")
        short_id, duration = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        target = self.store.buttons.target(short_id) if short_id else None
        if target is None or duration not in SILENCE_SECONDS:
            self._answer(query, "This button has expired; use /alerts for fresh ones.", alert=True)
            return
        matchers, description = target
        now = self.clock()
        seconds = SILENCE_SECONDS[duration]
        silence_id = self.alertmanager.create_silence(
            matchers,
            seconds,
            now,
            created_by=f"telegram:{who}",
            comment=f"silenced from Telegram for {duration}: {description}"[:500],
        )
        self.metrics.commands.labels("silence").inc()
        self._answer(query, f"Silenced for {duration}.")
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + seconds))
        text = (
            f"🔕 <b>{html.escape(description)}</b> silenced for {duration} (until {until})"
            f" by {html.escape(who)}."
        )
        self.reply(message, text, [[Button("🔔 Unsilence", f"u:{silence_id}")]])

    def _unsilence(self, query: dict, silence_id: str, who: str, message: dict) -> None:
        if not SILENCE_ID.fullmatch(silence_id):  # Alertmanager's ids are UUIDs
            self._answer(query, "This button is not one of mine.")
            return
        self.alertmanager.expire_silence(silence_id)
        self.metrics.commands.labels("unsilence").inc()
        self._answer(query, "Silence removed.")
        if message.get("message_id"):
            try:
                self.telegram.edit_buttons(message["chat"]["id"], message["message_id"], None)
            except TelegramError as exc:
                log.info("could not remove the unsilence button: %s", exc)
        self.reply(message, f"🔔 Silence removed by {html.escape(who)}.")
