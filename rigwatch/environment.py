"""What both programs read from their environment the same way: a variable with the program's
prefix that names no setting is a typo, said once at start with the nearest real name; and a
listen address is host:port (an IPv6 host in brackets)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping


def unknown_variables(
    prefix: str, known: Iterable[str], program: str, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One sentence per variable starting with prefix that is not in known (a typo is
    otherwise silently ignored), with the nearest known name."""
    names = sorted(set(known))
    notes = []
    for name in sorted(os.environ if environ is None else environ):
        if name.startswith(prefix) and name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            notes.append(f"{name} is not a {program} setting and is ignored{hint}")
    return notes


def split_host_port(text: str) -> tuple[str, int]:
    """("host", port) from "host:port", ":port" (host "") or "[::1]:port"; ValueError says
    what is wrong. The port may be 0 (any free port); the caller decides whether it allows it."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {text!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535 in {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
