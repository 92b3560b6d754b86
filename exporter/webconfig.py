"""The exporter's --web.config.file, in exporter-toolkit's format (the file node_exporter,
dcgm-exporter and nvidia_gpu_exporter read): ``basic_auth_users`` maps user names to bcrypt
hashes. rigwatch's server does not serve TLS: a ``tls_server_config`` section is refused with
one line that says to put the exporter behind a TLS proxy (docs/exporter.md shows one)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_KEYS = ("basic_auth_users", "tls_server_config", "http_server_config")
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# exporter-toolkit caches a verified (user, password) too: bcrypt costs tens of milliseconds
# per check by design, and Prometheus sends the same credentials every scrape.
CACHE_SIZE = 100


class WebConfigError(ValueError):
    """The file cannot be used; the message is the one line the exporter prints."""


@dataclass
class WebConfig:
    """Who may read the exporter's pages (no users: anyone)."""

    users: dict[str, bytes] = field(default_factory=dict)
    _verified: dict[bytes, bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allows(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries a configured user's password."""
        if not self.users:
            return True
        if not authorization or authorization[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, password = decoded.partition(b":")
        hashed = self.users.get(user.decode("utf-8", "replace"))
        if not colon or hashed is None:
            return False
        key = hashlib.sha256(user + b"\0" + password + b"\0" + hashed).digest()
        with self._lock:
            if self._verified.get(key):
                return True
        import bcrypt

        if not bcrypt.checkpw(password, hashed):
            return False
        with self._lock:
            if len(self._verified) >= CACHE_SIZE:
                self._verified.clear()
            self._verified[key] = True
        return True


def load_web_config(path: str) -> WebConfig:
    """Read and check the file; WebConfigError with one line when it cannot be used."""
    flag = f"--web.config.file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise WebConfigError(f"{flag}: cannot read it: {getattr(err, 'strerror', err)}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise WebConfigError(f"{flag}: not valid YAML{at}: {problem}") from None
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise WebConfigError(f"{flag}: expected a mapping with basic_auth_users")
    for key in data:
        if key not in KNOWN_KEYS:
            raise WebConfigError(f"{flag}: unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")
    if data.get("tls_server_config"):
        raise WebConfigError(
            f"{flag}: tls_server_config is not supported: rigwatch-exporter serves plain HTTP; "
            "put it behind a TLS proxy (see docs/exporter.md)"
        )
    if data.get("http_server_config"):
        raise WebConfigError(f"{flag}: http_server_config is not supported")
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise WebConfigError(f"{flag}: basic_auth_users must map user names to bcrypt hashes")
    checked: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(BCRYPT_PREFIXES):
            raise WebConfigError(
                f"{flag}: user {user!r}: the password must be a bcrypt hash ($2y$...), "
                "not plaintext; make one with: htpasswd -nBC 10 '' | tr -d ':\\n'"
            )
        if len(hashed) != 60:
            raise WebConfigError(f"{flag}: user {user!r}: not a whole bcrypt hash (60 characters)")
        checked[str(user)] = hashed.encode()
    return WebConfig(checked)
