"""Checks of the one-command stack without a Docker engine: Debian's docker-compose accepts
the file with the example settings, every mounted repository path exists, images are pinned,
only Grafana is published beyond localhost, and .env.example and the systemd units agree with
what the services read."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

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


def _repository_mounts(service: dict) -> dict[str, str]:
    """container path -> repository path of a service's mounts from the checkout."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_every_mounted_repository_path_exists():
    mounted = set()
    for name, service in _compose()["services"].items():
        for source in _repository_mounts(service).values():
            mounted.add(source)
            assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert mounted == {"./prometheus", "./grafana/provisioning", "./grafana/dashboards"}


def test_configuration_is_mounted_as_directories_not_single_files():
    # A single-file bind mount stays on the file's old inode once an editor renames a new
    # file over it; `/-/reload` would then reload the old configuration.
    for name, service in _compose()["services"].items():
        for source in _repository_mounts(service).values():
            assert (REPO / source).is_dir(), f"{name} mounts the single file {source}"


OVERRIDES = sorted(
    [*REPO.glob("docker-compose.*.yml"), *REPO.glob("deploy/*/docker-compose.yml"),
     *REPO.glob("deploy/compose/*.yml")]
)  # fmt: skip


@pytest.mark.parametrize("path", OVERRIDES, ids=lambda p: str(p.relative_to(REPO)))
def test_overrides_mount_directories_and_keep_routes_at_the_root(path):
    """What the shipped file does for points 1 and 2, every override and rig-side file does too:
    no single configuration file mounted from the checkout, and a Prometheus or Alertmanager
    whose command it replaces keeps --web.route-prefix=/."""
    for name, service in (yaml.safe_load(path.read_text()).get("services") or {}).items():
        for source in _repository_mounts(service).values():
            assert not source.endswith((".yml", ".yaml")), f"{name} mounts the file {source}"
        command = service.get("command") or []
        text = " ".join(command) if isinstance(command, list) else command
        if "--web.external-url" in text:
            assert "--web.route-prefix=/" in text, f"{name} in {path.name}"


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


def _in_container(mounts: dict[str, str], container_path: str) -> Path | None:
    """The repository file a container path shows, through the service's directory mounts."""
    for target, source in mounts.items():
        if container_path == target or container_path.startswith(target + "/"):
            return REPO / source / container_path[len(target) :].lstrip("/")
    return None


def test_prometheus_keeps_a_retention_and_mounts_rules_and_targets():
    prometheus = _compose()["services"]["prometheus"]
    assert any(a.startswith("--storage.tsdb.retention.time=") for a in prometheus["command"])
    mounts = _repository_mounts(prometheus)
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = _in_container(mounts, config_flag.split("=", 1)[1])
    assert config == REPO / "prometheus" / "prometheus.yml"
    # rules/ and targets/ are named relative to the configuration file.
    for relative in ("rules", "targets"):
        assert (config.parent / relative).is_dir(), relative


def test_external_urls_with_a_path_keep_the_routes_at_the_root():
    # --web.external-url with a path moves every route under it unless the route prefix is
    # set: the health checks, self-scrape and Prometheus -> Alertmanager would all 404.
    services = _compose()["services"]
    assert "--web.route-prefix=/" in services["prometheus"]["command"]
    assert "--web.route-prefix=/" in services["alertmanager"]["command"][0]


def test_alertmanager_reads_its_configuration_through_a_directory_mount():
    alertmanager = _compose()["services"]["alertmanager"]
    flag = re.search(r"--config\.file=(\S+)", alertmanager["command"][0]).group(1)
    mounts = _repository_mounts(alertmanager)
    assert _in_container(mounts, flag) == REPO / "prometheus" / "alertmanager.yml"


def test_no_gpu_variant_runs_the_exporter_without_nvidia_under_the_same_name(filled_env):
    result = run_tool(
        "docker-compose", "--env-file", str(filled_env), "-f", str(COMPOSE),
        "-f", str(REPO / "docker-compose.no-gpu.yml"), "config",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["exporter"]["profiles"] == ["gpu"], "the GPU exporter must not start"
    host = services["exporter-host"]
    assert "deploy" not in host
    assert host["image"] == services["exporter"]["image"]
    assert host["networks"]["default"]["aliases"] == ["exporter"]
    assert host["environment"]["RIGWATCH_COLLECTOR_GPU"] == "false"
    same = ("pid", "volumes", "ports", "healthcheck", "restart")
    assert {k: host[k] for k in same} == {k: services["exporter"][k] for k in same}
    # The shipped file itself stays the GPU rig's.
    assert "deploy" in services["exporter"] and "profiles" not in _compose()["services"]["exporter"]


def test_exporter_sees_the_hosts_user_names():
    exporter = _compose()["services"]["exporter"]
    assert "/etc/passwd:/etc/passwd:ro" in exporter["volumes"]


def test_rigwatch_images_carry_the_project_version_and_are_rebuilt():
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    for file in ("docker-compose.yml", "docker-compose.no-gpu.yml"):
        services = yaml.safe_load((REPO / file).read_text())["services"]
        for name, service in services.items():
            if "build" in service:
                assert service["image"].endswith(":" + version.group(1)), (file, name)
                assert service["pull_policy"] == "build", (file, name)
    for doc in ("README.md", "docs/stack.md", "docs/alert-bot.md"):
        text = (REPO / doc).read_text()
        assert "up -d --build" in text and "git pull" in text, doc


def test_dockerignore_keeps_secrets_and_environments_out_of_build_contexts():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "bot-config"} <= patterns
    for dockerfile in ("exporter/Dockerfile", "alert_bot/Dockerfile"):
        for line in (REPO / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert source.split("/")[0] not in patterns, f"{dockerfile} copies {source}"


def test_docker_run_example_of_the_bot_points_it_at_prometheus_and_alertmanager():
    header = [
        line.lstrip("# ").rstrip("\\ ")
        for line in (REPO / "alert_bot" / "Dockerfile").read_text().splitlines()
        if line.startswith("#")
    ]
    start = next(i for i, line in enumerate(header) if line.startswith("docker run"))
    command = " ".join(header[start : start + 5])
    assert "--env-file .env" in command
    assert "-e PROMETHEUS_URL=http://" in command and "-e ALERTMANAGER_URL=http://" in command
    assert "localhost" not in command.split("-v")[0]


def test_env_example_has_no_quoted_values_and_says_so():
    for name, value in _example_settings().items():
        assert not value.startswith(("'", '"')), name
    assert "without quotes" in ENV_EXAMPLE.read_text()


def test_grafana_password_is_documented_as_applied_only_on_a_new_volume():
    for path in (ENV_EXAMPLE, REPO / "docs" / "stack.md"):
        text = path.read_text()
        assert "reset-admin-password" in text, path.name
        assert "grafana-data" in text, path.name


def test_bot_config_override_mounts_a_directory_and_sets_the_path():
    override = yaml.safe_load((REPO / "deploy" / "compose" / "alert-bot-config.yml").read_text())
    bot = override["services"]["alert-bot"]
    (volume,) = bot["volumes"]
    source, target = volume.split(":")[:2]
    assert not source.endswith((".yml", ".yaml")), "a directory, not a single file"
    assert bot["environment"]["ALERT_BOT_CONFIG"].startswith(target + "/")
    assert "chmod 644" in (REPO / "docs" / "stack.md").read_text()


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


def test_every_mention_of_a_unit_names_the_virtualenv_it_runs():
    """The units run programs from one virtualenv; every paragraph of README and the docs that
    points at a unit file names that path, so nobody installs into ~/rigwatch (README's
    Quickstart, for trying it) and then starts a unit that looks in /opt/rigwatch."""
    units = sorted((REPO / "deploy" / "systemd").glob("*.service"))
    programs = [re.search(r"^ExecStart=(\S+)", u.read_text(), re.MULTILINE).group(1) for u in units]
    (venv,) = {str(Path(program).parent.parent) for program in programs}
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    mentions = 0
    for document in documents:
        for paragraph in re.split(r"\n\s*\n", document.read_text()):
            if re.search(r"deploy/systemd/[\w-]+\.service", paragraph):
                mentions += 1
                assert f"{venv}/" in paragraph or f"venv {venv}" in paragraph, (
                    document.name,
                    paragraph,
                )
                assert "~/rigwatch" not in paragraph, (document.name, paragraph)
    assert mentions >= 4


def test_install_instructions_install_from_the_checkout_not_from_pypi():
    # rigwatch is not published: `pip install rigwatch` would fetch whatever a stranger
    # uploaded under that name and run it as a service.
    documents = [REPO / "docs" / "stack.md", REPO / "docs" / "exporter.md"]
    documents += sorted((REPO / "deploy" / "systemd").glob("*.service"))
    installs = []
    for path in documents:
        for line in path.read_text().splitlines():
            if "pip install" in line:
                words = line.split("pip install", 1)[1].split()
                target = next(w for w in words if not w.startswith("-")).strip("'\"")
                installs.append((path.name, target))
    assert len(installs) >= 4, installs
    for name, target in installs:
        assert target.startswith((".", "/")), f"{name}: pip install {target}"
