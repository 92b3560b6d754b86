"""--web.config.file: a real Prometheus scrapes the exporter with basic_auth, a wrong password
is refused with 401, and a file the exporter cannot use is one line and exit status 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.servers import have_binary, running_prometheus
from tests.support import http_get, running_exporter, wait_until

HOST_ONLY = ("--no-collector.gpu", "--no-collector.gpu_process", "--no-collector.xid")
PASSWORD = "correct horse battery staple"


def _web_config(tmp_path: Path) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    return path


def _get(url: str, user: str | None = None, password: str = "") -> int:
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10):
            return 200
    except urllib.error.HTTPError as err:
        assert err.headers.get("WWW-Authenticate", "").startswith("Basic")
        return err.code


def test_basic_auth_users_allow_the_right_password_only(tmp_path):
    config = _web_config(tmp_path)
    with running_exporter(None, *HOST_ONLY, f"--web.config.file={config}") as (_, base):
        assert _get(base + "/metrics", "prometheus", PASSWORD) == 200
        assert _get(base + "/metrics", "prometheus", PASSWORD) == 200  # from the cache
        assert _get(base + "/metrics", "prometheus", "wrong") == 401
        assert _get(base + "/metrics", "someone", PASSWORD) == 401
        assert _get(base + "/metrics") == 401
        assert _get(base + "/") == 401
        assert _get(base + "/healthz") == 200  # says "ok" only; health checks have no password


@pytest.mark.skipif(not have_binary("prometheus"), reason="Debian's prometheus not installed")
def test_a_real_prometheus_scrapes_with_basic_auth(tmp_path):
    config = _web_config(tmp_path)
    with running_exporter(None, *HOST_ONLY, f"--web.config.file={config}") as (_, base):
        target = urllib.parse.urlsplit(base).netloc
        scrape = (
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
            "  - job_name: good\n    basic_auth: {username: prometheus, password: "
            f"'{PASSWORD}'}}\n    static_configs: [{{targets: ['{target}']}}]\n"
            "  - job_name: wrong\n    basic_auth: {username: prometheus, password: nope}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        with running_prometheus(tmp_path, scrape) as prometheus:

            def health() -> dict[str, tuple[str, str]]:
                _, body = http_get(prometheus + "/api/v1/targets")
                active = json.loads(body)["data"]["activeTargets"]
                return {t["labels"]["job"]: (t["health"], t["lastError"]) for t in active}

            states = wait_until(
                lambda: (s := health()) and all(h != "unknown" for h, _ in s.values()) and s,
                timeout=30,
                what="both targets scraped",
            )
            assert states["good"] == ("up", ""), states
            assert states["wrong"][0] == "down" and "401" in states["wrong"][1], states


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read it"),
        ("basic_auth_users: [unclosed\n", "not valid YAML at line"),
        ("basic_auth_users:\n  prometheus: hunter2\n", "must be a bcrypt hash"),
        ("tls_server_config:\n  cert_file: a.pem\n", "put it behind a TLS proxy"),
        ("basic_auth_user:\n  a: b\n", "unknown key 'basic_auth_user'"),
    ],
)
def test_a_file_it_cannot_use_is_one_line_and_exit_2(tmp_path, content, says):
    path = tmp_path / "web.yml"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--web.config.file={path}",
            "--web.listen-address=127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and str(path) in lines[0], done.stderr
