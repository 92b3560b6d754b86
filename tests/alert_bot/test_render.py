"""Splitting and packing HTML for Telegram, checked against the fake Bot API's own parser."""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st

from alert_bot.alerts.messages import blocks_for, pack
from alert_bot.alerts.model import Alert, Notification
from alert_bot.telegram.html import split_html, visible_length
from tests.alert_bot.fake_telegram import parse_telegram_html, utf16_len

TAGS = ["b", "i", "code", "u", "s", "pre", "blockquote"]
text_piece = st.text(alphabet=st.sampled_from(list("ab <>&\"'\n ЖёҐ🔥🧊é*_`")), max_size=40)


@st.composite
def markup(draw, depth: int = 0):
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 3 and draw(st.booleans()):
            tag = draw(st.sampled_from(TAGS))
            inner = draw(markup(depth + 1))
            parts.append(f"<{tag}>{inner}</{tag}>")
        elif draw(st.integers(0, 5)) == 0:
            parts.append(f'<a href="http://x/?a=1&amp;b={html.escape(draw(text_piece))}">')
            parts.append(html.escape(draw(text_piece) or "link") + "</a>")
        else:
            parts.append(html.escape(draw(text_piece)))
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(markup(), st.integers(min_value=2, max_value=60))
def test_split_pieces_are_valid_short_and_lose_nothing(source, budget):
    original = parse_telegram_html(source)
    pieces = split_html(source, budget)
    for piece in pieces:
        visible = parse_telegram_html(piece)  # raises like Telegram's 400 if a tag is cut
        assert 0 < utf16_len(visible) <= budget
    assert "".join(parse_telegram_html(p) for p in pieces) == original


@settings(max_examples=60, deadline=None)
@given(st.lists(markup(), min_size=1, max_size=12), st.integers(min_value=50, max_value=500))
def test_packing_keeps_order_and_limit(sources, budget):
    blocks = []
    for number, source in enumerate(sources):
        if not parse_telegram_html(source).strip():
            continue
        # The continuation note names the alert; a long or wide name must still leave room.
        title = ("Ж🔥" * 400)[: number * 37]
        blocks += blocks_for(source, number, 0, budget, max_parts=1000, title=title)
    messages = pack(blocks, budget)
    assert [b for m in messages for b in m.blocks] == blocks
    for message in messages:
        assert visible_length(message.html) <= budget
        parse_telegram_html(message.html)


def test_a_resolved_notice_says_what_was_not_what_to_do_now():
    from alert_bot.alerts.render import AlertRenderer, LinkSettings
    from tests.alert_bot.botkit import alert, notification

    renderer = AlertRenderer(LinkSettings("http://grafana:3000", "rigwatch-gpu", "http://am:9093"))
    summary = "GPU 0 on rig1 is at 93 °C, past its slowdown at 90 °C"
    advice = "Pause or stop the job on it now"
    firing = alert(name="GpuTemperatureCritical", summary=summary, description=advice)
    resolved = alert(
        name="GpuTemperatureCritical", status="resolved", summary=summary, description=advice
    )
    assert advice in parse_telegram_html(
        renderer.render(
            Alert.from_json(firing),
            Notification.from_json(notification(firing)),
            compact=False,
            now=0.0,
        )
    )
    text = parse_telegram_html(
        renderer.render(
            Alert.from_json(resolved),
            Notification.from_json(notification(resolved)),
            compact=False,
            now=0.0,
        )
    )
    assert text.startswith("✅ RESOLVED")
    assert "No longer true at 2026-11-22 10:12 UTC; while firing: " + summary in text
    assert advice not in text
    compact = parse_telegram_html(
        renderer.render(
            Alert.from_json(resolved),
            Notification.from_json(notification(resolved)),
            compact=True,
            now=0.0,
        )
    )
    assert "was: " + summary in compact and "lasted 12m" in compact


def test_an_alert_without_a_rig_says_what_it_is_about_not_rig_localhost():
    """PrometheusTargetFileInvalid has no rig label; its instance is the centre itself."""
    from alert_bot.alerts.render import AlertRenderer, LinkSettings
    from tests.alert_bot.botkit import alert, notification

    renderer = AlertRenderer(LinkSettings("http://grafana:3000", "rigwatch-gpu", "http://am:9093"))
    centre = alert(
        name="PrometheusTargetFileInvalid",
        rig="",
        gpu=None,
        instance="localhost:9090",
        job="prometheus",
    )
    text = parse_telegram_html(
        renderer.render(
            Alert.from_json(centre), Notification.from_json(notification(centre)), False, now=0.0
        )
    )
    assert "rig localhost:9090" not in text
    assert "🖥 job prometheus · instance localhost:9090" in text
    on_rig = alert(instance="rig1:9835")
    text = parse_telegram_html(
        renderer.render(
            Alert.from_json(on_rig), Notification.from_json(notification(on_rig)), False, now=0.0
        )
    )
    assert "🖥 rig rig1 · GPU 0" in text
