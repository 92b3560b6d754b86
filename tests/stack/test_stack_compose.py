"""Checks of the one-command stack without a Docker engine: Debian's docker-compose accepts
the file with the example settings, every mounted repository path exists, images are pinned,
only Grafana is published beyond localhost, and .env.example and the systemd units agree with
what the services read."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest
import yaml

from tests.stack.stack_support import run_tool
from tests.support import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SERVICES = {"exporter", "prometheus", "alertmanager", "grafana", "alert-bot"}
BOT_SETTINGS = {
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_API_URL",
    "ALERT_BOT_WEBHOOK_TOKEN",
    "ALERT_BOT_CONFIG",
    "GRAFANA_URL",
}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _example_settings() -> dict[str, str]:
    settings = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name] = value
    return settings


@pytest.fixture
def filled_env(tmp_path):
    """.env.example with the required secrets filled in, as a user would."""
    values = {
        "TELEGRAM_BOT_TOKEN": "123456:test-token",
        "TELEGRAM_CHAT_ID": "-1001234",
        "ALERT_BOT_WEBHOOK_TOKEN": "webhook-secret",
        "GRAFANA_ADMIN_PASSWORD": "a-password",
    }
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values else line)
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _compose_config(env_file) -> subprocess.CompletedProcess:
    return run_tool(
        "docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config"
    )  # fmt: skip


def test_docker_compose_accepts_the_file(filled_env):
    result = _compose_config(filled_env)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == SERVICES
    bot = resolved["services"]["alert-bot"]["environment"]
    assert bot["TELEGRAM_BOT_TOKEN"] == "123456:test-token"
    assert bot["TELEGRAM_CHAT_ID"] == "-1001234"
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "a-password"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_missing_secrets_are_a_clear_error():
    result = _compose_config(ENV_EXAMPLE)
    assert result.returncode != 0
    assert "in .env" in result.stderr


def test_every_mounted_repository_path_exists():
    mounts = 0
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                mounts += 1
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert mounts >= 6


def test_built_services_have_their_dockerfiles():
    built = {n: s["build"] for n, s in _compose()["services"].items() if "build" in s}
    assert set(built) == {"exporter", "alert-bot"}
    for name, build in built.items():
        dockerfile = REPO / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), f"{name} builds from {dockerfile}, which is missing"


def test_images_are_pinned():
    for name, service in _compose()["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        assert tag != "latest"
    services = _compose()["services"]
    # The versions the tests run (Debian's prometheus 2.42 and alertmanager 0.25).
    assert services["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    assert services["alertmanager"]["image"] == "prom/alertmanager:v0.25.0"


def test_only_grafana_is_published_beyond_localhost():
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            if name == "grafana":
                assert not port.startswith("127.0.0.1:")
            else:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} to the network"


def test_every_service_has_healthcheck_and_restart_policy():
    for name, service in _compose()["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_exporter_gets_gpus_host_pids_and_read_only_host_mounts():
    exporter = _compose()["services"]["exporter"]
    assert exporter["pid"] == "host"
    (device,) = exporter["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    host_mounts = [v for v in exporter["volumes"] if v.startswith("/")]
    assert host_mounts and all(":ro" in v for v in host_mounts)


def test_prometheus_keeps_a_retention_and_mounts_rules_and_targets():
    prometheus = _compose()["services"]["prometheus"]
    assert any(a.startswith("--storage.tsdb.retention.time=") for a in prometheus["command"])
    for path in ("./prometheus/rules:", "./prometheus/targets:", "./prometheus/prometheus.yml:"):
        assert any(v.startswith(path) for v in prometheus["volumes"]), path


def test_alertmanager_writes_the_token_file_its_config_reads():
    alertmanager = _compose()["services"]["alertmanager"]
    config = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    token_file = config["receivers"][0]["webhook_configs"][0]["http_config"]["authorization"][
        "credentials_file"
    ]
    assert f"> {token_file}" in alertmanager["command"][0]
    assert "--cluster.listen-address=" in alertmanager["command"][0]


def test_bot_queue_is_on_a_volume():
    bot = _compose()["services"]["alert-bot"]
    db = bot["environment"]["ALERT_BOT_DB"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in bot["volumes"]}
    directory = db.rsplit("/", 1)[0]
    assert directory in volumes and volumes[directory] in _compose()["volumes"]


def test_env_example_documents_every_setting_compose_reads():
    settings = _example_settings()
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used - set(settings) == set(), "compose reads settings .env.example lacks"
    assert set(settings) - used == set(), ".env.example has settings nothing reads"
    assert set(settings) >= BOT_SETTINGS
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[index - 1].startswith("#"), f"{line} has no comment above it"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((REPO / "deploy" / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize(
    ("unit", "script"),
    [("rigwatch-exporter.service", "rigwatch-exporter"), ("rigwatch-bot.service", "rigwatch-bot")],
)
def test_systemd_units(unit, script):
    parser = _unit(unit)
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    assert parser["Service"]["ExecStart"].split()[0].endswith("/" + script)
    assert parser["Service"]["Restart"] == "on-failure"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'{script} = "' in pyproject


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_finds_nothing_but_the_missing_install():
    units = sorted((REPO / "deploy" / "systemd").glob("*.service"))
    result = run_tool("systemd-analyze", "verify", *map(str, units))
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/rigwatch/bin/" not in line
    ]
    assert problems == []


def test_install_instructions_install_from_the_checkout_not_from_pypi():
    # rigwatch is not published: `pip install rigwatch` would fetch whatever a stranger
    # uploaded under that name and run it as a service.
    documents = [REPO / "docs" / "stack.md", REPO / "docs" / "exporter.md"]
    documents += sorted((REPO / "deploy" / "systemd").glob("*.service"))
    installs = []
    for path in documents:
        for line in path.read_text().splitlines():
            if "pip install" in line:
                target = line.split("pip install", 1)[1].split()[0].strip("'\"")
                installs.append((path.name, target))
    assert len(installs) >= 4, installs
    for name, target in installs:
        assert target.startswith((".", "/")), f"{name}: pip install {target}"
