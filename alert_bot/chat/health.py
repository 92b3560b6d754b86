"""/health [rig]: the weekly card-health report on demand (see reports.health)."""

from __future__ import annotations

from alert_bot.chat.context import Chat
from alert_bot.i18n import _
from alert_bot.reports.health import report_text, survey
from alert_bot.telegram.types import Message


def health(chat: Chat, message: Message, args: list[str]) -> None:
    """/health [rig]: the report now, a line for a rig where nothing drifted too."""
    wanted = args[0] if args else None
    now = chat.clock()
    rigs = survey(chat.prometheus, now, wanted)
    if not rigs:
        chat.reply(
            message,
            _("Prometheus has no cards of that rig this week.")
            if wanted
            else _("Prometheus has no cards this week."),
        )
        return
    texts = [report_text(chat.config, h, now, True) or "" for _n, h in sorted(rigs.items())]
    chat.reply(message, "\n\n".join(texts))
