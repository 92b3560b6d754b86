"""Draws docs/health-report.png: the weekly card-health report as a phone shows it in Telegram.

The message is the bot's own (alert_bot.reports.health.report_text, English), built from the figures
the end-to-end test's simulated month produced against a real Prometheus
(tests/alert_bot/test_health_report.py: GPU 1 warming 10 °C over 36 days while its fans are
asked 25 points more, its riser failing and its link falling back, and its memory remapping
rows in the last week). Telegram's HTML is drawn as the app does:
<b> bold, <code> monospace, emoji in colour (Debian's fonts-noto-color-emoji), lines wrapped to
the bubble.

    .venv/bin/python docs/health_report_png.py      # writes docs/health-report.png
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_bot.config import Config  # noqa: E402 - after the repository is on the path
from alert_bot.reports.health import Card, Finding, RigHealth, report_text

OUT = Path(__file__).resolve().parent / "health-report.png"
FONTS = Path("/usr/share/fonts/truetype")
REGULAR = FONTS / "dejavu/DejaVuSans.ttf"
BOLD = FONTS / "dejavu/DejaVuSans-Bold.ttf"
MONO = FONTS / "dejavu/DejaVuSansMono.ttf"
EMOJI = FONTS / "noto/NotoColorEmoji.ttf"
SIZE = 30  # pixels: a phone's text at 2x
WIDTH = 1000  # the bubble's text width
PAD = 36
EMOJI_RE = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]\ufe0f?")
# Tuesday 2026-12-08 09:00 UTC, the report's moment.
MOMENT = 1796720400.0


def sample_message() -> str:
    card = Card(
        "rig1",
        "rigwatch",
        "rig1:9835",
        "1",
        "GPU-d41f7e39-1111-4111-8111",
        "NVIDIA GeForce RTX 3090",
    )
    card.findings = [
        Finding("cooling", 75.0, 67.2),
        Finding("fans", 0.726, 0.531),
        Finding("throttling", 0.34, 0.03),
        Finding("link", 0.10, 0.0),
        Finding("pcie", 3360.0, 168.0),
        Finding("memory", 2.0, 0.0),
    ]
    health = RigHealth("rig1", "rigwatch", "rig1:9835", {card.uuid: card}, {card.uuid})
    config = Config("token", 1, "webhook-token", timezone="Europe/Berlin")
    text = report_text(config, health, MOMENT, all_well=False)
    assert text is not None
    return text


def runs(line: str) -> list[tuple[str, str]]:
    """(style, text) pieces of one line of Telegram HTML: bold, code, emoji or plain."""
    pieces: list[tuple[str, str]] = []
    for part in re.split(r"(<b>.*?</b>|<code>.*?</code>)", line):
        style = "bold" if part.startswith("<b>") else "mono" if part.startswith("<code>") else ""
        text = html.unescape(re.sub(r"<[^>]+>", "", part))
        for chunk in re.split(f"({EMOJI_RE.pattern})", text):
            if chunk:
                pieces.append(("emoji" if EMOJI_RE.fullmatch(chunk) else style, chunk))
    return pieces


class Painter:
    def __init__(self) -> None:
        self.fonts = {
            "": ImageFont.truetype(str(REGULAR), SIZE),
            "bold": ImageFont.truetype(str(BOLD), SIZE),
            "mono": ImageFont.truetype(str(MONO), SIZE - 2),
        }
        self.emoji_font = ImageFont.truetype(str(EMOJI), 109)  # the font's only bitmap size

    def width(self, style: str, text: str) -> float:
        return SIZE * 1.15 if style == "emoji" else self.fonts[style].getlength(text)

    def wrap(self, pieces: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        """Pieces broken into words and laid into lines no wider than WIDTH."""
        lines: list[list[tuple[str, str]]] = [[]]
        used = 0.0
        for style, text in pieces:
            words = [text] if style == "emoji" else re.findall(r"\S+\s*|\s+", text)
            for word in words:
                w = self.width(style, word)
                if used + w > WIDTH and lines[-1]:
                    lines.append([])
                    used = 0.0
                    word = word.lstrip()
                    w = self.width(style, word)
                lines[-1].append((style, word))
                used += w
        return lines

    def emoji(self, text: str) -> Image.Image:
        glyph = Image.new("RGBA", (140, 140), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((0, 0), text, font=self.emoji_font, embedded_color=True)
        glyph = glyph.crop(glyph.getbbox() or (0, 0, 1, 1))
        side = int(SIZE * 1.05)
        return glyph.resize((side, side), Image.LANCZOS)


def draw(message: str) -> Image.Image:
    painter = Painter()
    laid: list[list[tuple[str, str]]] = []
    for line in message.split("\n"):
        laid.extend(painter.wrap(runs(line)) if line else [[]])
    line_height = int(SIZE * 1.45)
    bubble_w = WIDTH + 2 * PAD
    bubble_h = len(laid) * line_height + 2 * PAD
    image = Image.new("RGB", (bubble_w + 80, bubble_h + 80), (0xC8, 0xD9, 0xE6))  # chat wallpaper
    canvas = ImageDraw.Draw(image)
    canvas.rounded_rectangle((40, 40, 40 + bubble_w, 40 + bubble_h), 28, fill="white")
    y = 40 + PAD
    for line in laid:
        x = 40.0 + PAD
        for style, text in line:
            if style == "emoji":
                image.paste(painter.emoji(text), (int(x), y + 2), painter.emoji(text))
            else:
                colour = (0xC0, 0x39, 0x2B) if style == "mono" else (0x11, 0x11, 0x11)
                canvas.text((x, y), text, font=painter.fonts[style], fill=colour)
            x += painter.width(style, text)
        y += line_height
    return image


def main() -> int:
    draw(sample_message()).save(OUT, optimize=True)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
