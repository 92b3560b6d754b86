"""Telegram's HTML as Telegram counts it: the tags its HTML parse mode understands, lengths in
UTF-16 code units of the visible text (links' targets and tags do not count; an emoji outside
the BMP counts twice), the text without markup, a check that markup will parse, and splitting
text that is too long without cutting a tag or an entity."""

from __future__ import annotations

import html
from html.parser import HTMLParser

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
