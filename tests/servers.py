"""The real servers the suite runs against, one helper each: Debian's Prometheus and
Alertmanager on free loopback ports, stopped by pid however the test ends."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.support import ManagedProcess, free_port, stopped_after

DEFAULT_ALERTMANAGER_CONFIG = (
    "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n"
)


def have_binary(name: str) -> bool:
    return shutil.which(name) is not None


def _config_file(workdir: Path, name: str, config: str | Path) -> Path:
    """A configuration given as a file is used as it is; YAML text is written to workdir."""
    if isinstance(config, Path):
        return config
    path = workdir / name
    path.write_text(config)
    return path


@contextlib.contextmanager
def _running_server(
    name: str,
    program: str,
    workdir: Path,
    config: str | Path,
    storage_flag: str,
    args: tuple[str, ...],
    port: int,
    ready_within: float,
    in_home: bool = False,
    storage: Path | None = None,
) -> Iterator[str]:
    """``program`` on 127.0.0.1:port with its config (``name``.yml) and storage in a fresh
    directory under workdir, or in ``storage`` when given (its working directory too when
    ``in_home``); yields its base URL once ready."""
    home = workdir / f"{name}-{port}"
    home.mkdir(parents=True)
    config_path = _config_file(home, f"{name}.yml", config)
    proc = ManagedProcess(
        [
            program,
            f"--config.file={config_path}",
            f"{storage_flag}={storage or home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *args,
        ],
        cwd=home if in_home else None,
    )
    base = f"http://127.0.0.1:{port}"
    with stopped_after(proc, base + "/-/ready", name, ready_within):
        yield base


@contextlib.contextmanager
def running_prometheus(
    workdir: Path,
    config: str | Path,
    extra_args: tuple[str, ...] = (),
    port: int | None = None,
    storage: Path | None = None,
) -> Iterator[str]:
    """A real Prometheus configured by config (YAML text, or a file already written), with its
    TSDB in a fresh directory under workdir (or in storage: history written beforehand, kept
    across restarts); yields its base URL."""
    with _running_server(
        "prometheus",
        "prometheus",
        workdir,
        config,
        "--storage.tsdb.path",
        extra_args,
        port or free_port(),
        60,
        in_home=True,
        storage=storage,
    ) as base:
        yield base


@contextlib.contextmanager
def running_alertmanager(
    workdir: Path,
    config: str | Path = DEFAULT_ALERTMANAGER_CONFIG,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """A real Alertmanager (no clustering) configured by config (YAML text, or a file already
    written), with its storage in a fresh directory under workdir; yields its base URL."""
    args = ("--cluster.listen-address=", *extra_args)
    with _running_server(
        "alertmanager",
        "prometheus-alertmanager",
        workdir,
        config,
        "--storage.path",
        args,
        free_port(),
        30,
    ) as base:
        yield base
