"""/mute's silence: what it matches, what it never hides, and how a rig mute is recognised
among other silences (the real Alertmanager run is in test_chat.py)."""

from __future__ import annotations

import yaml

from alert_bot.chat.silencing import DELIVERY_ALERTS, mute_matchers, never_muted, rig_mutes
from tests.support import REPO


def test_a_mute_never_hides_the_watchdog_nor_any_of_the_bots_delivery_alerts():
    stack = yaml.safe_load((REPO / "prometheus/rules/stack.yml").read_text())
    names = {r["alert"] for g in stack["groups"] for r in g["rules"] if "alert" in r}
    about_the_bot = {n for n in names if n.startswith("AlertBot")}
    assert about_the_bot and about_the_bot <= set(DELIVERY_ALERTS)
    assert "Watchdog" in names and "Watchdog" in never_muted("Watchdog")
    assert "Heartbeat" in never_muted("Heartbeat")  # the configured watchdog name


def test_rig_mutes_are_told_apart_from_other_silences():
    mine = {"id": "a", "endsAt": "2026-11-22T12:00:00Z", "matchers": mute_matchers("rig1", "W")}
    later = dict(mine, id="b", endsAt="2026-11-22T13:00:00Z")
    button = {
        "id": "c",
        "endsAt": "2026-11-22T14:00:00Z",
        "matchers": [{"name": "rig", "value": "rig2", "isRegex": False, "isEqual": True}],
    }
    assert rig_mutes([mine, later, button], "W") == {"rig1": later}
