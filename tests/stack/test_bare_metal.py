"""docs/stack.md's path without Docker, walked in one clean Debian container of the private
engine (the python stand-in image: Debian bookworm with python3 and its venv, nothing of
rigwatch): the doc's own command blocks as written, Debian's Prometheus and Alertmanager, the
exporter on the simulated NVML library, the bot with a fake Telegram. A container has no
systemd: each service starts as its unit file says (EnvironmentFile, Environment, User or a
dynamic user, ExecStart with $VARS), read from the unit files themselves; the shipped units are
checked with `systemd-analyze verify` against the installed tree.

One container, one apt run and one pip run per doc block: it costs what installing does."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.stack import engine
from tests.stack.stack_support import post_alerts
from tests.stack.test_compose_up import REQUIRED, GatewayTelegram
from tests.support import REPO, build_fake_nvml, http_get, make_scenario, wait_until

IMAGE = "python:3.12-slim"  # the stand-in: Debian bookworm, python3 and python3-venv
CONTAINER = "rigwatch-bare-metal"
TOKEN = "123456:bare-metal-test-token"
CHAT = -1002024
WEBHOOK_TOKEN = "bare-metal-webhook-secret"
PORTS = {"exporter": 10735, "bot": 10736, "prometheus": 9090, "alertmanager": 9093}
DYNAMIC_UID = 61234  # what DynamicUser=yes gives a service: a uid of its own, no groups
SECTION = "## Without Docker (systemd), or with a Prometheus you already have"


def log(message: str) -> None:
    print(f"[bare-metal {time.strftime('%H:%M:%S')}] {message}", flush=True)


def doc_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the doc's section without Docker."""
    text = (REPO / "docs" / "stack.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)


def command_lines(block: str) -> list[str]:
    """A shell block's commands, comments dropped (a comment-only line continues a comment)."""
    lines = []
    for line in block.splitlines():
        command = re.sub(r"(^|\s)#.*$", "", line).strip()
        if command:
            lines.append(command)
    return lines


def unit_settings(unit: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file: name -> values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    # A line ending in a backslash continues on the next, as systemd reads it.
    for raw in re.sub(r"\\\n\s*", " ", unit).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            name, _, value = line.partition("=")
            settings.setdefault(name.strip(), []).append(value.strip())
    return settings


def env_file(text: str) -> dict[str, str]:
    """A systemd EnvironmentFile: KEY=VALUE lines, quotes around a value removed."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    return values


class Box:
    """The one container everything runs in."""

    def __init__(self, docker: engine.Engine, name: str = CONTAINER):
        self.docker = docker
        self.name = name

    def sh(self, script: str, timeout: float = 120, check: bool = True, workdir: str = "/root"):
        result = self.docker.docker(
            "exec", "-w", workdir, self.name, "bash", "-ec", script, check=False, timeout=timeout
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        if check and result.returncode != 0:
            raise AssertionError(f"in the container, `{script}` failed:\n{output[-5000:]}")
        return output

    def read(self, path: str) -> str:
        return self.sh(f"cat {shlex.quote(path)}")

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        raw = content.encode() if isinstance(content, str) else content
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as archive:
            info = tarfile.TarInfo(Path(path).name)
            info.size, info.mode = len(raw), mode
            archive.addfile(info, io.BytesIO(raw))
        self.sh(f"mkdir -p {shlex.quote(str(Path(path).parent))}")
        self.docker.docker("cp", "-", f"{self.name}:{Path(path).parent}", input=data.getvalue())

    def start_unit(self, unit_path: str) -> None:
        """Start a service as systemd would from its unit file: its environment files and
        Environment= lines, its user (a uid of its own for DynamicUser, with its StateDirectory
        made and given to it), ExecStart with $VAR and ${VAR} expanded; output to a log."""
        settings = unit_settings(self.read(unit_path))
        env: dict[str, str] = {}
        for line in settings.get("Environment", []):
            for item in shlex.split(line):
                name, _, value = item.partition("=")
                env[name] = value
        # As systemd reads them: the files' settings override Environment= lines.
        for name in settings.get("EnvironmentFile", []):
            optional = name.startswith("-")
            path = name.lstrip("-")
            exists = self.sh(f"test -e {path} && echo yes || echo no").strip() == "yes"
            if not exists and optional:
                continue
            env.update(env_file(self.read(path)))
        (command,) = settings["ExecStart"]
        name = Path(unit_path).stem
        credentials = f"/run/credentials/{name}"
        argv: list[str] = []
        for word in shlex.split(command):
            whole = re.fullmatch(r"\$(\w+)", word)
            if whole:  # systemd splits $VAR into words
                argv += shlex.split(env.get(whole.group(1), ""))
            else:
                word = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word)
                argv.append(word.replace("$$", "$").replace("%d", credentials))
        if settings.get("DynamicUser") == ["yes"]:
            user = f"setpriv --reuid={DYNAMIC_UID} --regid={DYNAMIC_UID} --clear-groups"
            owner = f"{DYNAMIC_UID}:{DYNAMIC_UID}"
        elif "User" in settings:
            user = f"setpriv --reuid={settings['User'][0]} --regid={settings['User'][0]}"
            user += " --init-groups"
            owner = settings["User"][0]
        else:
            user, owner = "", "root"
        for state in settings.get("StateDirectory", []):
            self.sh(f"install -d -o {owner.split(':')[0]} /var/lib/{state}")
        # LoadCredential=: a copy only the service's user reads, its directory as %d.
        for credential in settings.get("LoadCredential", []):
            cred_name, _, source = credential.partition(":")
            target = shlex.quote(f"{credentials}/{cred_name}")
            self.sh(f"install -D -m 0400 -o {owner.split(':')[0]} {shlex.quote(source)} {target}")
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        line = f"env -i PATH=/usr/bin:/bin {exports} {user} {shlex.join(argv)}"
        self.docker.docker(
            "exec", "-d", self.name, "bash", "-c", f"exec {line} >/var/log/{name}.log 2>&1"
        )
        log(f"started {name}: {shlex.join(argv)}")

    def log_tail(self, name: str) -> str:
        return self.sh(f"tail -n 30 /var/log/{name}.log", check=False)


def _run_doc_block(box: Box, block: str, units: list[str], workdir: str) -> None:
    """A shell block of the doc, each `systemctl enable --now` left for start_unit."""
    script = []
    for line in command_lines(block):
        enabled = re.fullmatch(r"systemctl enable --now (\S+)", line)
        if enabled:
            units.append(f"/etc/systemd/system/{enabled.group(1)}.service")
        else:
            script.append(line)
    box.sh(" && ".join(script), timeout=600, workdir=workdir)


def _published(docker: engine.Engine) -> dict[str, str]:
    ports = {}
    for name, port in PORTS.items():
        mapping = docker.text("port", CONTAINER, f"{port}/tcp").split()[0]
        ports[name] = "http://" + mapping.replace("0.0.0.0", "127.0.0.1")
    return ports


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> Iterator[dict]:
    started = time.monotonic()
    with engine.engine_with_stand_ins("bare-metal test", log, REQUIRED) as docker:
        telegram = GatewayTelegram(TOKEN, docker.gateway()).start()
        try:
            yield _walk(docker, telegram, tmp_path_factory.mktemp("bare-metal"), started)
        finally:
            telegram.stop()
            log(f"done after {time.monotonic() - started:.0f} s")


def clean_box(
    docker: engine.Engine, tmp: Path, name: str, packages: list[str], publish: list[str]
) -> Box:
    """A container of the stand-in image (publishing the -p arguments given) holding the
    checkout in /root/rigwatch, Debian's packages installed (not started: a package's start
    script is not how these tests start services) and the directory systemd keeps units in."""
    docker.docker("run", "-d", "--name", name, *publish, IMAGE, "sleep", "infinity")
    box = Box(docker, name)
    checkout = tmp / "rigwatch"
    engine.copy_checkout(checkout)
    archive = tmp / "checkout.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(checkout, arcname="rigwatch")
    docker.docker("cp", "-", f"{name}:/root", input=archive.read_bytes(), timeout=120)
    box.sh(
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
        " && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
        f" --no-install-recommends {' '.join(packages)} >/dev/null"
        " && mkdir -p /etc/systemd/system",
        timeout=600,
    )
    return box


def _walk(docker: engine.Engine, telegram, tmp: Path, started: float) -> dict:
    publish = [arg for port in PORTS.values() for arg in ("-p", f"127.0.0.1::{port}")]
    # What the doc takes as given on a monitoring host: Debian's Prometheus and Alertmanager.
    box = clean_box(docker, tmp, CONTAINER, ["prometheus", "prometheus-alertmanager"], publish)
    log(f"Debian's prometheus and alertmanager installed after {time.monotonic() - started:.0f} s")

    blocks = doc_blocks()
    shell = [text for language, text in blocks if language == "sh"]
    (prometheus_yaml,) = [text for language, text in blocks if language == "yaml"]
    exporter_block, bot_block, alertmanager_args = shell
    units: list[str] = []
    # The exporter on the simulated rig: its library and scenario named in exporter.env.
    library = (build_fake_nvml() / "libnvidia-ml.so.1").read_bytes()
    box.write("/opt/fake-nvml/libnvidia-ml.so.1", library, mode=0o755)
    box.write("/opt/fake-nvml/scenario.json", json.dumps(make_scenario(num_gpus=2)))
    _run_doc_block(box, exporter_block, units, "/root")  # it starts with `cd rigwatch`
    log(f"exporter block done after {time.monotonic() - started:.0f} s")
    _run_doc_block(box, bot_block, units, "/root/rigwatch")  # "in the checkout"
    log(f"bot block done after {time.monotonic() - started:.0f} s")
    assert box.sh("stat -c %a /etc/rigwatch/bot.env").strip() == "600"
    # After the bot's block, which makes /etc/rigwatch: the exporter's flags go there.
    box.write(
        "/etc/rigwatch/exporter.env",
        "LD_LIBRARY_PATH=/opt/fake-nvml\nFAKE_NVML_SCENARIO=/opt/fake-nvml/scenario.json\n",
    )
    bot_env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_CHAT_ID": str(CHAT),
        "TELEGRAM_API_URL": telegram.url,
        "ALERT_BOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "PROMETHEUS_URL": "http://localhost:9090",
        "ALERTMANAGER_URL": "http://localhost:9093",
    }
    box.sh(
        "cat >> /etc/rigwatch/bot.env <<'EOF'\n"
        + "".join(f"{k}={v}\n" for k, v in bot_env.items())
        + "EOF"
    )
    assert box.sh("stat -c %a /etc/rigwatch/bot.env").strip() == "600"

    # Prometheus: the doc's jobs and rules added to Debian's configuration.
    config = yaml.safe_load(box.read("/etc/prometheus/prometheus.yml"))
    added = yaml.safe_load(prometheus_yaml.replace("monitoring-host", "localhost"))
    config["rule_files"] = config.get("rule_files") or []
    config["rule_files"] += added["rule_files"]
    config["scrape_configs"] += added["scrape_configs"]
    config.setdefault("global", {}).update(scrape_interval="2s", evaluation_interval="2s")
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": ["localhost:9093"]}]}]}
    box.write("/etc/prometheus/prometheus.yml", yaml.safe_dump(config, sort_keys=False))
    box.sh("mkdir -p /etc/prometheus/rigwatch && cp rigwatch/prometheus/rules/*.yml "
           "/etc/prometheus/rigwatch/")  # fmt: skip
    targets = yaml.safe_load((REPO / "prometheus" / "targets" / "rigs.yml").read_text())
    targets[0]["targets"] = ["localhost:10735"]
    box.write("/etc/prometheus/rigwatch-targets/rigs.yml", yaml.safe_dump(targets))
    # Alertmanager: the shipped receivers pointed at the bot; the doc's ARGS line.
    shipped = (REPO / "prometheus" / "alertmanager.yml").read_text()
    box.write(
        "/etc/prometheus/alertmanager.yml",
        shipped.replace("http://alert-bot:10736", "http://localhost:10736").replace(
            "/alertmanager/webhook_token", "/etc/prometheus/webhook_token"
        ),
    )
    box.write("/etc/prometheus/webhook_token", WEBHOOK_TOKEN, mode=0o640)
    box.sh("chgrp prometheus /etc/prometheus/webhook_token")
    (args_line,) = command_lines(alertmanager_args)
    box.write("/etc/default/prometheus-alertmanager", args_line + "\n")

    for unit in units:
        box.start_unit(unit)
    box.start_unit("/lib/systemd/system/prometheus.service")
    box.start_unit("/lib/systemd/system/prometheus-alertmanager.service")
    external = re.search(r"--web.external-url=(\S+?)\"?$", args_line).group(1)
    return {
        "box": box,
        "urls": _published(docker),
        "telegram": telegram,
        "units": units,
        "external_url": external,
    }


def _get(url: str) -> str:
    status, body = http_get(url)
    assert status == 200, (url, status, body[-500:])
    return body


READY = {"exporter": "/metrics", "bot": "/healthz", "prometheus": "/-/ready"}
UNITS = {"exporter": "rigwatch-exporter", "bot": "rigwatch-bot"}


def _up(walked: dict, name: str) -> None:
    url = walked["urls"][name] + READY.get(name, "/-/ready")
    try:
        wait_until(lambda: http_get(url)[0] == 200, timeout=90, what=name)
    except TimeoutError:
        unit = UNITS.get(name, "prometheus-" + name if name == "alertmanager" else name)
        raise AssertionError(f"{name} not up:\n{walked['box'].log_tail(unit)}") from None


def test_the_documented_units_start_and_the_exporter_serves_the_rig(walked):
    assert [Path(u).name for u in walked["units"]] == [
        "rigwatch-exporter.service",
        "rigwatch-bot.service",
    ]
    _up(walked, "exporter")
    metrics = _get(walked["urls"]["exporter"] + "/metrics")
    assert 'rigwatch_gpu_temperature_celsius{gpu="1"' in metrics
    _up(walked, "bot")


def test_prometheus_scrapes_the_rig_and_the_bot_with_the_rules(walked):
    _up(walked, "prometheus")
    base = walked["urls"]["prometheus"]

    def targets_up():
        active = json.loads(_get(base + "/api/v1/targets"))["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return health if health.get("rigwatch") == health.get("alert-bot") == "up" else None

    try:
        wait_until(targets_up, timeout=60, what="rigwatch and alert-bot targets up")
    except TimeoutError:
        raise AssertionError(_get(base + "/api/v1/targets")[-3000:]) from None
    groups = json.loads(_get(base + "/api/v1/rules"))["data"]["groups"]
    names = {g["name"] for g in groups}
    assert {"rigwatch-host"} <= names, names
    query = urllib.parse.urlencode({"query": 'rigwatch_gpu_info{rig="rig1"}'})
    assert len(json.loads(_get(base + "/api/v1/query?" + query))["data"]["result"]) == 2


def test_an_alert_reaches_telegram_with_alertmanager_s_external_url(walked):
    _up(walked, "alertmanager")
    _up(walked, "bot")
    base = walked["urls"]["alertmanager"]
    alert = [{"labels": {"alertname": "BareMetalTest", "severity": "critical", "rig": "rig1"},
              "annotations": {"summary": "the bare-metal walk's alert"}}]  # fmt: skip
    post_alerts(base, alert)
    telegram = walked["telegram"]

    def message():
        return next((c for c in telegram.sent(CHAT) if "BareMetalTest" in c.params["text"]), None)

    try:
        sent = wait_until(message, timeout=60, what="the alert in the chat")
    except TimeoutError:
        raise AssertionError(walked["box"].log_tail("rigwatch-bot")) from None
    assert (
        f'href="{walked["external_url"].rstrip("/")}/#/silences/new?filter='
        in (sent.params["text"])
    )


def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path):
    """systemd's own check of the unit files (settings, dependencies, ExecStart), the push
    centre's (vmauth, the relay) included, in a root
    holding this machine's system units, the shipped ones and their commands (stubs: the walk
    above runs the real ones)."""
    if shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir():
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    units = sorted((REPO / "deploy" / "systemd").glob("rigwatch-*.service"))
    units += sorted((REPO / "deploy" / "centre-push").glob("rigwatch-*.service"))
    for unit in units:
        shutil.copy(unit, installed)
        settings = unit_settings(unit.read_text())
        for command in settings["ExecStart"] + settings.get("ExecReload", []):
            program = root / shlex.split(command)[0].lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}"]
        + [f"/etc/systemd/system/{unit.name}" for unit in units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
