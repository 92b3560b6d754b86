"""The `xid` collector: counts Xid errors per card and code from NVML's event API.

A background thread waits on an NVML event set with every card registered for
XidCriticalError; it is the exporter's one piece of kept state. Counts survive NVML
re-initialisation (the event set is rebuilt for the new handles). A scrape only reads the
counts and never calls NVML.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.exposition import LabelSet
from exporter.families import Sample, build_families, specs
from exporter.nvml.device import Gpu
from exporter.nvml.errors import TIMEOUT, error_name
from exporter.nvml.session import NvmlSession
from exporter.scrape import Unit, UnitOutcome
from exporter.settings import Settings
from rigwatch.logs import logger

LOG = logger("exporter", "xid")

FAMILIES = specs(
    (
        "rigwatch_gpu_xid_errors_total",
        "counter",
        'Xid errors reported by the driver, by code; critical="true" for hardware faults.',
    ),
)

# Short, because the watcher holds off NVML re-initialisation while it waits.
WAIT_MILLISECONDS = 250


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


class XidWatcher:
    """The thread that turns NVML Xid events into counts keyed by (uuid, code)."""

    def __init__(self, session: NvmlSession) -> None:
        self.session = session
        self.counts: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.healthy = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xid-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> dict[tuple[str, int], int]:
        with self.lock:
            return dict(self.counts)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as exc:  # noqa: BLE001 - keep counting after a surprise
                self.healthy = False
                self.session.once.log(
                    logging.ERROR, ("xid-crash", repr(exc)), "Xid watcher failed: %r", exc
                )
                self._stop.wait(1.0)

    def _watch(self) -> None:
        session = self.session
        event_set = None
        generation = -1
        uuid_by_handle: dict[int | None, str] = {}
        while not self._stop.is_set():
            if not session.up:
                self._stop.wait(0.5)
                continue
            with session.reading():
                nv = session.nvml
                if not session.up:
                    continue
                if session.generation != generation:
                    event_set, uuid_by_handle = self._register(event_set)
                    generation = session.generation
                if event_set is None:
                    idle = True
                else:
                    idle = False
                    try:
                        data = nv.nvmlEventSetWait_v2(event_set, WAIT_MILLISECONDS)
                    except nv.NVMLError as err:
                        if err.value != TIMEOUT:
                            session.once.log(
                                logging.WARNING,
                                ("xid-wait", err.value),
                                "waiting for Xid events failed: %s",
                                error_name(nv, err.value),
                            )
                            idle = True
                        data = None
                    if data is not None and data.eventType & nv.nvmlEventTypeXidCriticalError:
                        self._count(data, uuid_by_handle)
            if idle:
                # Nothing to wait on (no card registered, or waiting fails): poll slowly.
                self._stop.wait(0.5)

    def _register(self, old_event_set: Any) -> tuple[Any, dict[int | None, str]]:
        session = self.session
        nv = session.nvml
        if old_event_set is not None:
            # It may belong to the previous NVML session, which already freed it.
            with contextlib.suppress(nv.NVMLError):
                nv.nvmlEventSetFree(old_event_set)
        try:
            event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as err:
            session.once.log(
                logging.WARNING,
                ("xid-create", err.value),
                "cannot create an NVML event set for Xid events: %s",
                error_name(nv, err.value),
            )
            self.healthy = False
            return None, {}
        uuid_by_handle: dict[int | None, str] = {}
        for gpu in session.gpus():
            if not gpu.up:
                continue
            try:
                nv.nvmlDeviceRegisterEvents(
                    gpu.device.handle, nv.nvmlEventTypeXidCriticalError, event_set
                )
            except nv.NVMLError as err:
                session.once.log(
                    logging.WARNING,
                    ("xid-register", gpu.uuid, err.value),
                    "GPU %s (%s): Xid events unavailable: %s",
                    gpu.device.index,
                    gpu.uuid,
                    error_name(nv, err.value),
                )
                continue
            uuid_by_handle[_address(gpu.device.handle)] = gpu.uuid
        self.healthy = True
        if not uuid_by_handle:
            return event_set, {}
        return event_set, uuid_by_handle

    def _count(self, data: Any, uuid_by_handle: dict[int | None, str]) -> None:
        nv = self.session.nvml
        uuid = uuid_by_handle.get(_address(data.device))
        if uuid is None:
            try:
                uuid = nv.nvmlDeviceGetUUID(data.device)
            except nv.NVMLError:
                uuid = ""
            if isinstance(uuid, bytes):
                uuid = uuid.decode(errors="replace")
        code = int(data.eventData)
        with self.lock:
            self.counts[(uuid, code)] = self.counts.get((uuid, code), 0) + 1
        LOG.warning("GPU %s: Xid %d", uuid, code)


class XidCollector:
    name = "xid"

    def __init__(self, settings: Settings, session: NvmlSession) -> None:
        self.session = session
        self.critical = settings.critical_xids
        self.watcher = XidWatcher(session)
        self.watcher.start()
        # The series a scrape shows ((uuid, code) keys in order, with their label sets) only
        # change when a card or a new (card, code) pair appears: built once per such change.
        self._layout_key: tuple = ()
        self._layout: list[tuple[tuple[str, int], LabelSet]] = []

    def plan(self) -> list[Unit]:
        return []

    def build(self, outcomes: list[UnitOutcome]) -> tuple[list[Metric], bool]:
        counts = self.watcher.snapshot()
        session = self.session
        gpus = session.gpus()
        cards = tuple((g.uuid, g.device.index) for g in gpus)
        layout_key = (session.generation, cards, tuple(counts))
        if layout_key != self._layout_key:
            self._layout = self._lay_out(gpus, counts)
            self._layout_key = layout_key
        get = counts.get
        samples: list[Sample] = [
            ("rigwatch_gpu_xid_errors_total", labels, float(get(key, 0)))
            for key, labels in self._layout
        ]
        return build_families(FAMILIES, samples), self.watcher.healthy

    def _lay_out(
        self, gpus: list[Gpu], counts: dict[tuple[str, int], int]
    ) -> list[tuple[tuple[str, int], LabelSet]]:
        critical = self.critical
        by_uuid = {gpu.uuid: gpu for gpu in gpus}
        keys = set(counts)
        # Critical codes start at 0 on every card so that a rule's increase() sees the very
        # first fault instead of a series appearing out of nowhere.
        for uuid in by_uuid:
            for code in critical:
                keys.add((uuid, code))
        layout = []
        for uuid, code in sorted(keys):
            gpu = by_uuid.get(uuid)
            labels = LabelSet(
                gpu=gpu.device.index if gpu is not None else "",
                uuid=uuid,
                xid=str(code),
                critical="true" if code in critical else "false",
            )
            layout.append(((uuid, code), labels))
        return layout

    def close(self) -> None:
        self.watcher.stop()
