"""Command line of rigwatch's exporter: flags with RIGWATCH_* environment fallbacks, then serve."""

from __future__ import annotations

import argparse
import difflib
import gc
import os
import re
import signal
import sys
import threading
from typing import Any

from exporter import __version__
from exporter.collectors import REGISTRY
from exporter.settings import (
    DEFAULT_CRITICAL_XIDS,
    DEFAULT_DISK_EXCLUDE,
    DEFAULT_FS_TYPES_EXCLUDE,
    DEFAULT_MOUNT_POINTS_EXCLUDE,
    DEFAULT_NETDEV_EXCLUDE,
    DEFAULT_PORT,
    Settings,
)
from rigwatch.environment import split_host_port, unknown_variables
from rigwatch.logs import LEVELS, configure, logger, parse_level
from rigwatch.words import parse_bool

LOG = logger("exporter")


COLLECTOR_DEFAULTS = {name: entry.default_on for name, entry in REGISTRY.items()}


def env_name(flag: str) -> str:
    """--collector.netdev.device-exclude -> RIGWATCH_COLLECTOR_NETDEV_DEVICE_EXCLUDE."""
    return "RIGWATCH_" + re.sub(r"[.\-]", "_", flag.lstrip("-")).upper()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (usage stays behind --help), which
    keeps the flags it was given (add_argument's own return value), so that their environment
    variables and the "did you mean" hints need none of argparse's private state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flags: list[argparse.Action] = []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.dest not in ("help", "version"):
            self.flags.append(action)
        return action

    def option_names(self) -> list[str]:
        return [option for action in self.flags for option in action.option_strings]

    def error(self, message: str):  # type: ignore[override]
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            hints = []
            for word in unknown.group(1).split():
                name = word.split("=", 1)[0]
                if name.startswith("--"):
                    close = difflib.get_close_matches(name, self.option_names(), n=1)
                    if close:
                        hints.append(f"{name}: did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="rigwatch-exporter",
        description="Prometheus exporter for NVIDIA GPUs (NVML) and the host (psutil). "
        "Every flag can also be set through the environment variable named in its help.",
        allow_abbrev=False,
    )

    def add(flag: str, help_text: str, **kwargs) -> None:
        env = env_name(flag)
        parser.add_argument(flag, help=f"{help_text} [env {env}]", **kwargs)

    add(
        "--web.listen-address",
        f"host:port to serve on; ':{DEFAULT_PORT}' listens on every interface",
        dest="listen_address",
        default=f":{DEFAULT_PORT}",
        metavar="ADDRESS",
    )
    add(
        "--web.config.file",
        "exporter-toolkit web configuration file: basic_auth_users with bcrypt hashes "
        "(TLS is refused: serve the exporter behind a TLS proxy)",
        dest="web_config_file",
        default="",
        metavar="FILE",
    )
    for name, default_on in COLLECTOR_DEFAULTS.items():
        add(
            f"--collector.{name}",
            f"enable the {name} collector (default {'on' if default_on else 'off'})",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
        )
    add(
        "--collector.filesystem.mount-points-include",
        "regular expression; when set, only mount points it matches are reported",
        dest="fs_mount_points_include",
        default="",
        metavar="REGEX",
    )
    add(
        "--collector.filesystem.mount-points-exclude",
        "regular expression of mount points to leave out",
        dest="fs_mount_points_exclude",
        default=DEFAULT_MOUNT_POINTS_EXCLUDE,
        metavar="REGEX",
    )
    add(
        "--collector.filesystem.fs-types-exclude",
        "regular expression of filesystem types to leave out (pseudo filesystems by default)",
        dest="fs_types_exclude",
        default=DEFAULT_FS_TYPES_EXCLUDE,
        metavar="REGEX",
    )
    add(
        "--collector.netdev.device-include",
        "regular expression; when set, only network devices it matches are reported",
        dest="netdev_include",
        default="",
        metavar="REGEX",
    )
    add(
        "--collector.netdev.device-exclude",
        "regular expression of network devices to leave out",
        dest="netdev_exclude",
        default=DEFAULT_NETDEV_EXCLUDE,
        metavar="REGEX",
    )
    add(
        "--collector.diskstats.device-exclude",
        "regular expression of block devices to leave out (partitions, loop and RAM disks)",
        dest="disk_exclude",
        default=DEFAULT_DISK_EXCLUDE,
        metavar="REGEX",
    )
    add(
        "--collector.xid.critical-codes",
        'comma-separated Xid codes labelled critical="true" (hardware faults)',
        dest="critical_xids",
        default=",".join(str(code) for code in DEFAULT_CRITICAL_XIDS),
        metavar="CODES",
    )
    add(
        "--collector.gpu_process.full-command-line",
        "label each GPU process's run with its whole command line (up to 256 characters) "
        "instead of its script or module name; command lines can hold tokens and paths",
        dest="process_full_command_line",
        action=argparse.BooleanOptionalAction,
        default=False,
    )
    add(
        "--scrape.timeout-seconds",
        "scrape deadline; a Prometheus X-Prometheus-Scrape-Timeout-Seconds header lowers it",
        dest="scrape_timeout",
        default="5",
        metavar="SECONDS",
    )
    add(
        "--nvml.retry-max-seconds",
        "longest wait between attempts to (re)initialise NVML; waits start at 1 s and double",
        dest="nvml_retry_max",
        default="60",
        metavar="SECONDS",
    )
    add("--path.procfs", "procfs mount point", dest="procfs", default="/proc", metavar="PATH")
    add(
        "--path.sysfs",
        "sysfs mount point (hwmon temperatures and fans, the PCI bus)",
        dest="sysfs",
        default="/sys",
        metavar="PATH",
    )
    add(
        "--path.rootfs",
        "where the host's root filesystem is mounted (e.g. /host in a container); "
        "filesystem sizes are read below it and reported with this prefix removed",
        dest="rootfs",
        default="/",
        metavar="PATH",
    )
    add(
        "--log.level",
        "one of " + ", ".join(LEVELS),
        dest="log_level",
        default="info",
        metavar="LEVEL",
    )
    parser.add_argument("--version", action="version", version=f"rigwatch-exporter {__version__}")
    return parser


def _apply_env(parser: _Parser, args: argparse.Namespace, argv: list[str]) -> None:
    """Fill every flag not given on the command line from its RIGWATCH_* variable."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for action in parser.flags:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags:
            continue
        primary = flags[0]
        if any(flag in given for flag in action.option_strings):
            continue
        raw = os.environ.get(env_name(primary))
        if raw is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            try:
                setattr(args, action.dest, parse_bool(raw))
            except ValueError:
                parser.error(f"{env_name(primary)}={raw!r}: expected true or false")
        else:
            setattr(args, action.dest, raw)


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """One sentence per RIGWATCH_* variable that names no flag, with the nearest that does."""
    known = {
        env_name(action.option_strings[0])
        for action in build_parser().flags
        if action.option_strings[0].startswith("--")
    }
    return unknown_variables("RIGWATCH_", known, "rigwatch-exporter", environ)


def _parse_address(parser: argparse.ArgumentParser, address: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(address)
    except ValueError:
        port = 0
    if port == 0:
        parser.error(
            f"--web.listen-address {address!r}: expected host:port, e.g. ':{DEFAULT_PORT}'"
        )
    return host, port


def _pattern(parser: argparse.ArgumentParser, flag: str, text: str) -> re.Pattern | None:
    if text == "":
        return None
    try:
        return re.compile(text)
    except re.error as err:
        parser.error(f"{flag} {text!r}: invalid regular expression: {err}")
    raise AssertionError("unreachable")


def _seconds(parser: argparse.ArgumentParser, flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        parser.error(f"{flag} {text!r}: expected a positive number of seconds")
    return value


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse argv (default sys.argv[1:]) and the environment; exits 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _apply_env(parser, args, argv)

    host, port = _parse_address(parser, args.listen_address)
    enabled = set()
    for name, default_on in COLLECTOR_DEFAULTS.items():
        value = getattr(args, f"collector_{name}")
        if default_on if value is None else value:
            enabled.add(name)

    codes: set[int] = set()
    for part in args.critical_xids.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            parser.error(
                f"--collector.xid.critical-codes {args.critical_xids!r}: "
                "expected comma-separated integers, e.g. 48,79"
            )
        codes.add(int(part))

    # An include pattern says exactly what to report; the default exclude would only get in
    # its way (--collector.netdev.device-include=^lo$ must report lo). An exclude the user
    # set explicitly still applies.
    if args.netdev_include and args.netdev_exclude == DEFAULT_NETDEV_EXCLUDE:
        args.netdev_exclude = ""
    if (
        args.fs_mount_points_include
        and args.fs_mount_points_exclude == DEFAULT_MOUNT_POINTS_EXCLUDE
    ):
        args.fs_mount_points_exclude = ""

    try:
        level = parse_level(args.log_level)
    except ValueError as err:
        parser.error(f"--log.level {err}")

    web_config = None
    if args.web_config_file:
        from exporter.webconfig import WebConfigError, load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except WebConfigError as err:
            parser.error(str(err))

    return Settings(
        listen_host=host,
        listen_port=port,
        collectors=frozenset(enabled),
        fs_mount_points_include=_pattern(
            parser, "--collector.filesystem.mount-points-include", args.fs_mount_points_include
        ),
        fs_mount_points_exclude=_pattern(
            parser, "--collector.filesystem.mount-points-exclude", args.fs_mount_points_exclude
        ),
        fs_types_exclude=_pattern(
            parser, "--collector.filesystem.fs-types-exclude", args.fs_types_exclude
        ),
        netdev_include=_pattern(parser, "--collector.netdev.device-include", args.netdev_include),
        netdev_exclude=_pattern(parser, "--collector.netdev.device-exclude", args.netdev_exclude),
        disk_exclude=_pattern(parser, "--collector.diskstats.device-exclude", args.disk_exclude),
        critical_xids=frozenset(codes),
        scrape_timeout_seconds=_seconds(parser, "--scrape.timeout-seconds", args.scrape_timeout),
        nvml_retry_max_seconds=_seconds(parser, "--nvml.retry-max-seconds", args.nvml_retry_max),
        procfs=args.procfs,
        sysfs=args.sysfs,
        rootfs=args.rootfs,
        log_level=level,
        process_full_command_line=bool(args.process_full_command_line),
        web_config=web_config,
    )


# Generation 0 of the cyclic garbage collector may hold this many objects before a collection.
# A full 8-GPU scrape has over 1000 new container objects alive at once (samples, families),
# so at CPython's default of 700 nearly every scrape ran a collection (~0.2 ms each) and about
# every 125th a full one over everything loaded at startup (~10 ms). Nothing the exporter
# keeps forms reference cycles; what garbage does is still collected, only later.
GC_GENERATION0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once startup is done: keep what it loaded out of the collector's sight (gc.freeze) and
    let a scrape's short-lived objects come and go without a collection."""
    gc.freeze()
    _, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(GC_GENERATION0_THRESHOLD, generation1, generation2)


def main(argv: list[str] | None = None) -> int:
    """Run the exporter until SIGTERM or SIGINT; returns the process exit status."""
    settings = parse_settings(argv)
    configure(settings.log_level)
    for note in unknown_environment():
        LOG.warning("%s", note)
    # Imported after parsing so that --help and bad flags answer without loading the stack.
    from exporter.server import ExporterServer

    try:
        server = ExporterServer(settings)
    except OSError as err:
        address = f"{settings.listen_host}:{settings.listen_port}"
        print(f"rigwatch-exporter: cannot listen on {address}: {err.strerror}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        LOG.info("received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_gc()
    server.start()
    LOG.info(
        "rigwatch-exporter %s listening on %s:%d, collectors: %s",
        __version__,
        settings.listen_host or "*",
        server.port,
        ", ".join(sorted(settings.collectors)),
    )
    while not stop.wait(3600):
        pass
    server.close()
    return 0
