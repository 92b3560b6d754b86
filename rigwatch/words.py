"""The words a boolean setting takes, in any case, in both programs (RIGWATCH_* flags'
variables, the bot's environment and YAML): docs/exporter.md and docs/alert-bot.md list them."""

from __future__ import annotations

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """True or False for one of the listed words (any case, surrounding blanks ignored);
    ValueError names the accepted ones otherwise."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r}: expected true/false, 1/0, yes/no or on/off")
