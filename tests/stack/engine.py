"""A private Docker engine for the compose test: its own dockerd (socket, data root and exec root
in a temporary directory) and the stand-in base images of tests/containers/, built from a
debootstrap root filesystem and cached between runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO, wait_until

CONTAINERS = REPO / "tests" / "containers"
CACHE = Path(os.environ.get("RIGWATCH_TEST_CACHE", Path.home() / ".cache" / "rigwatch-tests"))
SUITE = "bookworm"
BASE_IMAGE = "rigwatch-test/debian:bookworm"
# tests/containers/<directory> -> the image name the project's files use, or, for a
# directory whose Dockerfile has one stage an image, stage -> image name.
STAND_INS: dict[str, str | dict[str, str]] = {
    "python": "python:3.12-slim",
    "prometheus": "prom/prometheus:v2.42.0",
    "alertmanager": "prom/alertmanager:v0.25.0",
    "debian": "debian:bookworm-slim",
    "victoriametrics": {
        app: f"victoriametrics/{app}:v1.79.5"
        for app in ("vmauth", "vmagent", "victoria-metrics", "vmalert")
    },
}


def stand_in_images() -> list[str]:
    """Every image name the stand-ins take."""
    return [
        name
        for images in STAND_INS.values()
        for name in (images.values() if isinstance(images, dict) else [images])
    ]


EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


# The engine must run where this is set (.ci/run sets it, and CI=true implies it): there a
# skip would hide that the stack was never brought up.
REQUIRED = os.environ.get("RIGWATCH_REQUIRE_ENGINE") == "1" or os.environ.get("CI") == "true"


def skip_module_unless_runnable(what: str) -> None:
    """Called at a test module's top: where no private engine can run and none is required,
    skips the whole module with one line saying why (not one line per test)."""
    reason = unavailable()
    if reason is not None and not REQUIRED:
        pytest.skip(f"{what} not run: {reason}", allow_module_level=True)


def unavailable() -> str | None:
    """Why a private engine cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to start a private dockerd"
    if not Path("/etc/debian_version").exists():
        return "needs a Debian host (debootstrap builds the stand-in images from its mirror)"
    for tool in ("dockerd", "docker", "debootstrap", "docker-compose", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/run.sh installs it)"
    return None


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses, so debootstrap goes where apt already goes."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))
    sources += [Path("/etc/apt/sources.list"), *Path("/etc/apt").glob("sources.list.d/*.list")]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for url in re.findall(r"(?:URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return "http://deb.debian.org/debian"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _extra_certificates() -> dict[str, bytes]:
    if not EXTRA_CA_DIR.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(EXTRA_CA_DIR.glob("*.crt")) if p.is_file()}


def _atomic_cache_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + f".part-{os.getpid()}")


def unmount_below(path: Path) -> None:
    """Lazily unmount every mount at or below path, deepest first."""
    prefix = str(path.resolve())
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1].replace("\\040", " ")
        if target == prefix or target.startswith(prefix + "/"):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    remaining = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix + "/")
    ]
    if remaining:
        raise RuntimeError(f"still mounted below {prefix}: {remaining}; not removing it")


def base_rootfs(log) -> Path:
    """A tarball of a minimal Debian root filesystem, made by debootstrap once and cached."""
    mirror = debian_mirror()
    key = _digest(SUITE.encode(), mirror.encode(), b"minbase")
    tarball = CACHE / f"debian-{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    part = _atomic_cache_path(tarball)
    root = tempfile.mkdtemp(prefix="rigwatch-rootfs-")
    try:
        log(f"debootstrap {SUITE} from {mirror} (cached afterwards in {CACHE})")
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, root, mirror],
            check=True,
            capture_output=True,
            timeout=900,
        )
        # No apt lists or packages in the image: each stand-in runs apt-get update itself.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in Path(root, leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        subprocess.run(["tar", "-C", root, "-cf", str(part), "."], check=True)
    finally:
        # debootstrap mounts /proc and /sys (and may bind the host's /dev) inside the target
        # while it works: a failed run can leave them, and removing through them must not happen.
        unmount_below(Path(root))
        shutil.rmtree(root, ignore_errors=True)
    part.rename(tarball)
    return tarball


def stand_ins_key(rootfs: Path) -> str:
    """Content key of the stand-in images: the root filesystem, their Dockerfiles, the CAs."""
    parts = [rootfs.name.encode()]
    for path in sorted(CONTAINERS.rglob("*")):
        if path.is_file():
            parts += [str(path.relative_to(CONTAINERS)).encode(), path.read_bytes()]
    for name, data in _extra_certificates().items():
        parts += [name.encode(), data]
    return _digest(*parts)


class Engine:
    """dockerd on its own socket with everything under `root`; stop() removes all of it."""

    def __init__(self, root: Path, log) -> None:
        self.root = root
        self.log = log
        self.socket = root / "docker.sock"
        self.process: subprocess.Popen | None = None
        self.start_error: str | None = None
        self.bridge_existed = True
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        # Compose v1 must not read the user's configuration (credential helpers, contexts).
        self.env["DOCKER_CONFIG"] = str(root / "client-config")
        self.env.pop("DOCKER_CONTEXT", None)

    def start(self, timeout: float = 60) -> None:
        self.bridge_existed = Path("/sys/class/net/docker0").exists()
        (self.root / "client-config").mkdir(parents=True, exist_ok=True)
        log_file = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - lives as long as dockerd
        # The compose file mounts / with `rslave`, which needs / to be a shared mount, as systemd
        # makes it on a normal host. Where it is not (a private / in a sandbox), dockerd gets a
        # mount namespace of its own with / shared, and the machine's mounts stay untouched.
        # unshare and sh exec into dockerd, so the pid is dockerd's.
        self.process = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "unchanged",
                "sh",
                "-c",
                'mount --make-rshared / && exec "$@"',
                "sh",
                "dockerd",
                "--host",
                f"unix://{self.socket}",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                # No swarm, no metrics, no experimental: only what compose needs.
                "--log-level",
                "warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        try:
            wait_until(
                lambda: (
                    self.process.poll() is not None
                    or self.docker("version", check=False, timeout=10).returncode == 0
                ),
                timeout=timeout,
                interval=0.5,
                what="dockerd",
            )
        except TimeoutError:
            raise RuntimeError(
                f"dockerd did not answer within {timeout:.0f} s:\n{self.log_tail()}"
            ) from None
        if self.process.poll() is not None:
            raise RuntimeError(f"dockerd exited at start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "dockerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                + result.stderr.decode(errors="replace")[-4000:]
            )
        return result

    def text(self, *args: str, timeout: float = 120) -> str:
        return self.docker(*args, timeout=timeout).stdout.decode()

    def inspect(self, kind: str, name: str) -> dict:
        return json.loads(self.text(kind, "inspect", name))[0]

    def gateway(self) -> str:
        """The default bridge's address on this machine: where containers reach the host."""
        config = self.inspect("network", "bridge")["IPAM"]["Config"][0]
        # dockerd leaves Gateway out when it is the subnet's first address (its default).
        return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))

    def stop(self) -> None:
        """Remove every container, volume and image, stop dockerd (by pid), remove its files."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.text("ps", "-aq", timeout=30).split()
                if ids:
                    self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
                self.docker("volume", "prune", "-f", check=False, timeout=60)
                self.docker("system", "prune", "-a", "-f", check=False, timeout=120)
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # dockerd leaves its default bridge behind; it was not there before this engine.
        if not self.bridge_existed and Path("/sys/class/net/docker0").exists():
            subprocess.run(["ip", "link", "delete", "docker0"], check=False, capture_output=True)
        # Mounts dockerd left behind (a crash) must go before the directory can.
        unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def load_stand_ins(self) -> None:
        """Give the engine the stand-in images: from the cache, or built and then cached."""
        rootfs = base_rootfs(self.log)
        key = stand_ins_key(rootfs)
        cached = CACHE / f"stand-ins-{key}.tar"
        if cached.exists():
            self.log(f"stand-in images from the cache ({cached.name})")
            self.docker("load", "-i", str(cached), timeout=300)
            return
        self.log("importing the root filesystem and building the stand-in images")
        self.docker("import", str(rootfs), BASE_IMAGE, timeout=300)
        for directory, image in STAND_INS.items():
            with tempfile.TemporaryDirectory(prefix="rigwatch-standin-") as context:
                shutil.copytree(CONTAINERS / directory, context, dirs_exist_ok=True)
                certificates = Path(context, "ca-certificates")
                certificates.mkdir()
                (certificates / ".keep").touch()
                for name, data in _extra_certificates().items():
                    (certificates / name).write_bytes(data)
                stages = image if isinstance(image, dict) else {None: image}
                for stage, name in stages.items():
                    target = ["--target", stage] if stage else []
                    self.docker("build", "-q", *target, "-t", name, context, timeout=600)
        for old in CACHE.glob("stand-ins-*.tar"):
            old.unlink()
        part = _atomic_cache_path(cached)
        self.docker("save", "-o", str(part), *stand_in_images(), timeout=300)
        part.rename(cached)


@contextlib.contextmanager
def private_engine(log) -> Iterator[Engine]:
    """A started private engine, always stopped and removed afterwards. One at a time on this
    machine (a lock file): every private dockerd uses the default bridge, docker0, so a second
    one (another pytest-xdist worker, another run of the suite) waits for the first to finish."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "engine.lock", "w") as lock:
        log(f"waiting for the engine lock {lock.name}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _started_engine(log) as engine:
            yield engine


@contextlib.contextmanager
def _started_engine(log) -> Iterator[Engine]:
    engine = Engine(Path(tempfile.mkdtemp(prefix="rigwatch-dockerd-")), log)
    try:
        try:
            engine.start()
        except RuntimeError as exc:
            # e.g. no overlay filesystem or no iptables in this kernel: said in one line.
            lines = str(exc).splitlines()
            engine.start_error = lines[0] + (f" ({lines[-1].strip()[-200:]})" if lines[1:] else "")
        yield engine
    finally:
        engine.stop()


@contextlib.contextmanager
def engine_with_stand_ins(what: str, log, required: bool) -> Iterator[Engine]:
    """A started private engine holding the stand-in images. Where no engine can run, the
    test is skipped with one line saying why, or fails where an engine is required."""

    def cannot_run(reason: str):
        if required:
            pytest.fail(f"{what} could not run: {reason}")
        pytest.skip(f"{what} not run: {reason}")

    reason = unavailable()
    if reason is not None:
        cannot_run(reason)
    with private_engine(log) as docker:
        if docker.start_error:
            cannot_run(docker.start_error)
        docker.load_stand_ins()
        yield docker


def copy_checkout(destination: Path) -> None:
    """The files a user's checkout has: tracked ones and new ones git would not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def write_env(checkout: Path, values: dict[str, str]) -> None:
    """checkout/.env: .env.example with the given values filled in, written with no quotes
    (compose strips them, `docker run --env-file` does not); values .env.example has no line
    for are added at the end."""
    lines, missing = [], dict(values)
    for line in (checkout / ".env.example").read_text().splitlines():
        name = line.partition("=")[0]
        if name in missing and "=" in line:
            line = f"{name}={missing.pop(name)}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in missing.items()]
    (checkout / ".env").write_text("\n".join(lines) + "\n")


@dataclass
class ComposeProject:
    """A checkout's compose files run as one project in a private engine; env: the variables
    the test sets (free host ports), over the engine's."""

    engine: Engine
    checkout: Path
    project: str
    files: list[str]
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 300) -> str:
        command = ["docker-compose"]
        for name in self.files:
            command += ["-f", name]
        env = {**self.engine.env, **self.env, "COMPOSE_PROJECT_NAME": self.project}
        result = subprocess.run(
            [*command, *args],
            cwd=self.checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
            )
        return result.stdout

    def containers(self) -> dict[str, dict]:
        """service name -> `docker inspect` of its container, for this project's containers."""
        ids = self.engine.text(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"
        ).split()
        found = {}
        for container_id in ids:
            info = self.engine.inspect("container", container_id)
            found[info["Config"]["Labels"]["com.docker.compose.service"]] = info
        return found

    def describe(self) -> str:
        """Each container's state, health probes and last log lines, for a failure's message."""
        lines = []
        for name, info in self.containers().items():
            state = info["State"]
            health = state.get("Health", {})
            lines.append(f"{name}: {state['Status']} health={health.get('Status')}")
            for probe in health.get("Log", [])[-2:]:
                lines.append(f"  probe exit {probe['ExitCode']}: {probe['Output'][-300:]!r}")
            output = self.engine.docker("logs", "--tail", "15", info["Id"], check=False)
            lines.append("  " + (output.stdout + output.stderr).decode(errors="replace")[-1500:])
        return "\n".join(lines)
