"""Tests for the simulated NVML: the real pynvml, in a fresh child process per test, reads
every scenario field back through libnvidia-ml.so.1 with NVML's values, units and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    SCENARIO_RECHECK_S,
    fake_nvml_env,
    make_device,
    make_scenario,
    until_scenario_seen,
    wait_until,
    write_scenario,
)

# How long a change may take to show on a loaded machine: the library's recheck interval and a
# call through the child's pipe, with a wide margin. A wait, so a quiet machine spends 0.1 s.
SEEN_WITHIN_S = 50 * SCENARIO_RECHECK_S

NOT_SUPPORTED = 3
NO_PERMISSION = 4
UNINITIALIZED = 1
INSUFFICIENT_SIZE = 7
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
GPU_IS_LOST = 15
NOT_FOUND = 6
UNKNOWN = 999

# The child evaluates one Python expression per stdin line against pynvml and answers one JSON
# line: {"ok": value} or {"error": NVML return code}. `h(i)` is device i's handle; `run(src)`
# executes a block that sets `result`, for multi-threaded checks inside the child.
_CHILD = textwrap.dedent(
    r"""
    import ctypes, json, sys, threading, time
    import pynvml as n

    def h(i):
        return n.nvmlDeviceGetHandleByIndex(i)

    def plain(v):
        if isinstance(v, (ctypes.Structure, ctypes.Union)):
            return {f[0]: plain(getattr(v, f[0])) for f in v._fields_}
        if isinstance(v, n.nvmlFriendlyObject):
            return {k: plain(x) for k, x in vars(v).items()}
        if isinstance(v, (list, tuple, ctypes.Array)):
            return [plain(x) for x in v]
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, ctypes._Pointer):
            return ctypes.cast(v, ctypes.c_void_p).value
        return v

    def run(src):
        scope = {"n": n, "h": h, "time": time, "threading": threading}
        exec(src, scope)
        return scope.get("result")

    scope = {"n": n, "h": h, "run": run, "plain": plain, "time": time}
    for line in sys.stdin:
        try:
            out = {"ok": plain(eval(json.loads(line), scope))}
        except n.NVMLError as err:
            out = {"error": err.value}
        print(json.dumps(out), flush=True)
    """
)


class Nvml:
    """A child Python process driving the fake library through pynvml, one call at a time."""

    def __init__(self, scenario: Path, stderr_path: Path):
        self.stderr_file = stderr_path.open("w")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            env={**os.environ, **fake_nvml_env(scenario)},
            text=True,
        )

    def send(self, expr: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(expr) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child died:\n{self.stderr_path.read_text()}")
        return json.loads(line)

    def ask(self, expr: str) -> dict:
        self.send(expr)
        return self.receive()

    def ok(self, expr: str):
        answer = self.ask(expr)
        assert "ok" in answer, f"{expr} answered NVML error {answer.get('error')}"
        return answer["ok"]

    def error(self, expr: str) -> int:
        answer = self.ask(expr)
        assert "error" in answer, f"{expr} succeeded with {answer.get('ok')!r}"
        return answer["error"]

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        self.stderr_file.close()


@pytest.fixture
def nvml(scenario_file: Path, tmp_path: Path) -> Iterator[Nvml]:
    child = Nvml(scenario_file, tmp_path / "child.stderr")
    try:
        yield child
    finally:
        child.close()


def _three_cards_init(scenario_file: Path, nvml: Nvml, flags: dict[int, str]) -> dict:
    """NVML initialised on three cards, each card in flags with that flag set; the scenario,
    for edits."""
    scenario = make_scenario(3)
    for index, flag in flags.items():
        scenario["devices"][index][flag] = True
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlInit()")
    return scenario


def _full_device(index: int) -> dict:
    """A card with a distinctive value in every field, so a mix-up between fields shows."""
    return make_device(
        index,
        name="NVIDIA RTX A6000",
        temperature_c=61,
        temperature_slowdown_c=93,
        temperature_shutdown_c=98,
        memory_temperature_c=74,
        fan_speeds_percent=[41, 43],
        power_mw=231456,
        power_limit_mw=300000,
        energy_mj=987654321012,
        utilization_gpu_percent=87,
        utilization_memory_percent=34,
        encoder_percent=12,
        decoder_percent=7,
        memory_total_bytes=51527024640,
        memory_used_bytes=20000000000,
        clocks_mhz={"graphics": 1800, "sm": 1801, "memory": 8001, "video": 1500},
        max_clocks_mhz={"graphics": 2100, "sm": 2101, "memory": 8002, "video": 1950},
        pstate=2,
        clock_event_reasons=0x4 | 0x40,
        pcie={
            "gen": 3,
            "max_gen": 4,
            "width": 8,
            "max_width": 16,
            "replay_counter": 17,
            "tx_kbps": 123456,
            "rx_kbps": 654321,
        },
        ecc={
            "corrected_volatile": 5,
            "uncorrected_volatile": 1,
            "corrected_aggregate": 50,
            "uncorrected_aggregate": 2,
        },
        remapped_rows={"correctable": 3, "uncorrectable": 1, "pending": True, "failure": False},
        serial="1320221000123",
    )


def test_library_is_the_one_pynvml_loads_through_its_search(nvml: Nvml, fake_nvml_dir: Path):
    nvml.ok("n.nvmlInit()")
    maps = nvml.ok("open('/proc/self/maps').read()")
    loaded = {line.split()[-1] for line in maps.splitlines() if "libnvidia-ml" in line}
    assert loaded == {str(fake_nvml_dir / "libnvidia-ml.so.1")}
    out = subprocess.run(
        ["readelf", "-d", str(fake_nvml_dir / "libnvidia-ml.so.1")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Library soname: [libnvidia-ml.so.1]" in out


def test_every_field_reads_back_with_nvml_units(scenario_file: Path, nvml: Nvml):
    write_scenario(
        scenario_file,
        make_scenario(
            devices=[_full_device(0), make_device(1)],
            driver_version="555.42.06",
            cuda_driver_version=12050,
        ),
    )
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlSystemGetDriverVersion()") == "555.42.06"
    assert nvml.ok("n.nvmlSystemGetCudaDriverVersion()") == 12050
    assert nvml.ok("n.nvmlSystemGetCudaDriverVersion_v2()") == 12050
    assert nvml.ok("n.nvmlSystemGetNVMLVersion()") == "12.555.42.06"
    assert nvml.ok("n.nvmlDeviceGetCount()") == 2

    assert nvml.ok("n.nvmlDeviceGetName(h(0))") == "NVIDIA RTX A6000"
    assert nvml.ok("n.nvmlDeviceGetUUID(h(0))") == "GPU-00000000-1111-2222-3333-444444444444"
    assert nvml.ok("n.nvmlDeviceGetUUID(h(1))") == "GPU-00000001-1111-2222-3333-444444444444"
    assert nvml.ok("n.nvmlDeviceGetIndex(h(1))") == 1
    assert nvml.ok("n.nvmlDeviceGetMinorNumber(h(1))") == 1
    assert nvml.ok("n.nvmlDeviceGetSerial(h(0))") == "1320221000123"
    pci = nvml.ok("n.nvmlDeviceGetPciInfo(h(1))")
    assert pci["busId"] == "00000000:02:00.0"
    assert (pci["domain"], pci["bus"], pci["device"]) == (0, 2, 0)
    assert pci["busIdLegacy"] == "0000:02:00.0"
    uuid1 = "GPU-00000001-1111-2222-3333-444444444444"
    assert nvml.ok(f"n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(b'{uuid1}'))") == 1
    by_bus_id = "n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByPciBusId(b'00000000:02:00.0'))"
    assert nvml.ok(by_bus_id) == 1

    assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), n.NVML_TEMPERATURE_GPU)") == 61
    assert nvml.ok("n.nvmlDeviceGetTemperatureV(h(0), n.NVML_TEMPERATURE_GPU)") == 61
    slowdown = "n.nvmlDeviceGetTemperatureThreshold(h(0), n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)"
    shutdown = "n.nvmlDeviceGetTemperatureThreshold(h(0), n.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)"
    assert nvml.ok(slowdown) == 93
    assert nvml.ok(shutdown) == 98
    field = nvml.ok("n.nvmlDeviceGetFieldValues(h(0), [n.NVML_FI_DEV_MEMORY_TEMP])")[0]
    assert field["fieldId"] == 82
    assert field["nvmlReturn"] == 0
    assert field["valueType"] == 1  # NVML_VALUE_TYPE_UNSIGNED_INT
    assert field["value"]["uiVal"] == 74
    energy = nvml.ok("n.nvmlDeviceGetFieldValues(h(0), [n.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION])")
    assert energy[0]["value"]["ullVal"] == 987654321012

    assert nvml.ok("n.nvmlDeviceGetNumFans(h(0))") == 2
    assert nvml.ok("n.nvmlDeviceGetFanSpeed_v2(h(0), 0)") == 41
    assert nvml.ok("n.nvmlDeviceGetFanSpeed_v2(h(0), 1)") == 43
    assert nvml.ok("n.nvmlDeviceGetFanSpeed(h(0))") == 41

    assert nvml.ok("n.nvmlDeviceGetPowerUsage(h(0))") == 231456  # mW
    assert nvml.ok("n.nvmlDeviceGetEnforcedPowerLimit(h(0))") == 300000  # mW
    assert nvml.ok("n.nvmlDeviceGetPowerManagementLimit(h(0))") == 300000
    assert nvml.ok("n.nvmlDeviceGetTotalEnergyConsumption(h(0))") == 987654321012  # mJ

    assert nvml.ok("n.nvmlDeviceGetUtilizationRates(h(0))") == {"gpu": 87, "memory": 34}
    assert nvml.ok("n.nvmlDeviceGetEncoderUtilization(h(0))")[0] == 12
    assert nvml.ok("n.nvmlDeviceGetDecoderUtilization(h(0))")[0] == 7

    mem = nvml.ok("n.nvmlDeviceGetMemoryInfo(h(0))")
    assert mem == {"total": 51527024640, "used": 20000000000, "free": 31527024640}
    mem2 = nvml.ok("n.nvmlDeviceGetMemoryInfo(h(0), version=n.nvmlMemory_v2)")
    assert (mem2["total"], mem2["used"], mem2["free"]) == (51527024640, 20000000000, 31527024640)

    clocks = {"graphics": 0, "sm": 1, "memory": 2, "video": 3}
    for name, clock_type in clocks.items():
        want = _full_device(0)
        assert nvml.ok(f"n.nvmlDeviceGetClockInfo(h(0), {clock_type})") == want["clocks_mhz"][name]
        got_max = nvml.ok(f"n.nvmlDeviceGetMaxClockInfo(h(0), {clock_type})")
        assert got_max == want["max_clocks_mhz"][name]
    assert nvml.ok("n.nvmlDeviceGetPerformanceState(h(0))") == 2

    # Bit values as pynvml names them: sw power cap | hw thermal slowdown.
    want_reasons = nvml.ok(
        "n.nvmlClocksEventReasonSwPowerCap | n.nvmlClocksEventReasonHwThermalSlowdown"
    )
    assert want_reasons == 0x44
    assert nvml.ok("n.nvmlDeviceGetCurrentClocksEventReasons(h(0))") == want_reasons
    assert nvml.ok("n.nvmlDeviceGetCurrentClocksThrottleReasons(h(0))") == want_reasons

    assert nvml.ok("n.nvmlDeviceGetCurrPcieLinkGeneration(h(0))") == 3
    assert nvml.ok("n.nvmlDeviceGetMaxPcieLinkGeneration(h(0))") == 4
    assert nvml.ok("n.nvmlDeviceGetCurrPcieLinkWidth(h(0))") == 8
    assert nvml.ok("n.nvmlDeviceGetMaxPcieLinkWidth(h(0))") == 16
    assert nvml.ok("n.nvmlDeviceGetPcieReplayCounter(h(0))") == 17
    tx = "n.nvmlDeviceGetPcieThroughput(h(0), n.NVML_PCIE_UTIL_TX_BYTES)"
    rx = "n.nvmlDeviceGetPcieThroughput(h(0), n.NVML_PCIE_UTIL_RX_BYTES)"
    assert nvml.ok(tx) == 123456  # KB/s
    assert nvml.ok(rx) == 654321

    assert nvml.ok("n.nvmlDeviceGetEccMode(h(0))") == [1, 1]
    ecc = "n.nvmlDeviceGetTotalEccErrors(h(0), n.NVML_MEMORY_ERROR_TYPE_{}, n.NVML_{}_ECC)"
    assert nvml.ok(ecc.format("CORRECTED", "VOLATILE")) == 5
    assert nvml.ok(ecc.format("UNCORRECTED", "VOLATILE")) == 1
    assert nvml.ok(ecc.format("CORRECTED", "AGGREGATE")) == 50
    assert nvml.ok(ecc.format("UNCORRECTED", "AGGREGATE")) == 2
    assert nvml.ok("n.nvmlDeviceGetRemappedRows(h(0))") == [3, 1, 1, 0]


def test_pcie_throughput_samples_for_about_20ms(nvml: Nvml):
    nvml.ok("n.nvmlInit()")
    took = nvml.ok(
        "run('''\nt = time.monotonic()\n"
        "v = n.nvmlDeviceGetPcieThroughput(h(0), n.NVML_PCIE_UTIL_RX_BYTES)\n"
        "result = [v, time.monotonic() - t]\n''')"
    )
    assert took[0] == 2000
    assert 0.018 <= took[1] < 0.5


_NULLABLE_CALLS = {
    "temperature_c": ["n.nvmlDeviceGetTemperature(h(0), 0)"],
    "temperature_slowdown_c": ["n.nvmlDeviceGetTemperatureThreshold(h(0), 1)"],
    "temperature_shutdown_c": ["n.nvmlDeviceGetTemperatureThreshold(h(0), 0)"],
    "fan_speeds_percent": ["n.nvmlDeviceGetNumFans(h(0))", "n.nvmlDeviceGetFanSpeed_v2(h(0), 0)"],
    "power_mw": ["n.nvmlDeviceGetPowerUsage(h(0))"],
    "power_limit_mw": ["n.nvmlDeviceGetEnforcedPowerLimit(h(0))"],
    "energy_mj": ["n.nvmlDeviceGetTotalEnergyConsumption(h(0))"],
    "utilization_gpu_percent": ["n.nvmlDeviceGetUtilizationRates(h(0))"],
    "encoder_percent": ["n.nvmlDeviceGetEncoderUtilization(h(0))"],
    "decoder_percent": ["n.nvmlDeviceGetDecoderUtilization(h(0))"],
    "memory_used_bytes": ["n.nvmlDeviceGetMemoryInfo(h(0))"],
    "clocks_mhz": ["n.nvmlDeviceGetClockInfo(h(0), 1)"],
    "max_clocks_mhz": ["n.nvmlDeviceGetMaxClockInfo(h(0), 2)"],
    "pstate": ["n.nvmlDeviceGetPerformanceState(h(0))"],
    "clock_event_reasons": ["n.nvmlDeviceGetCurrentClocksEventReasons(h(0))"],
    "pcie": [
        "n.nvmlDeviceGetCurrPcieLinkGeneration(h(0))",
        "n.nvmlDeviceGetMaxPcieLinkWidth(h(0))",
        "n.nvmlDeviceGetPcieReplayCounter(h(0))",
        "n.nvmlDeviceGetPcieThroughput(h(0), 0)",
    ],
    "ecc": ["n.nvmlDeviceGetEccMode(h(0))", "n.nvmlDeviceGetTotalEccErrors(h(0), 1, 0)"],
    "remapped_rows": ["n.nvmlDeviceGetRemappedRows(h(0))"],
    "processes": [
        "n.nvmlDeviceGetComputeRunningProcesses(h(0))",
        "n.nvmlDeviceGetGraphicsRunningProcesses(h(0))",
    ],
    "xid_events": ["n.nvmlDeviceGetSupportedEventTypes(h(0))"],
    "serial": ["n.nvmlDeviceGetSerial(h(0))"],
}


def test_null_and_absent_fields_answer_not_supported(scenario_file: Path, nvml: Nvml):
    dev = _full_device(0)
    for field in _NULLABLE_CALLS:
        dev[field] = None
    dev["clocks_mhz"] = {"graphics": 100}  # a clock missing from the object
    dev["memory_temperature_c"] = None  # answered per entry of nvmlDeviceGetFieldValues
    other = _full_device(1)
    del other["power_mw"]  # absent behaves as null
    other["pcie"] = {"gen": 4, "width": None}
    write_scenario(scenario_file, make_scenario(devices=[dev, other], cuda_driver_version=None))
    nvml.ok("n.nvmlInit()")
    for field, calls in _NULLABLE_CALLS.items():
        for call in calls:
            assert nvml.error(call) == NOT_SUPPORTED, (field, call)
    assert nvml.ok("n.nvmlDeviceGetClockInfo(h(0), 0)") == 100
    assert nvml.error("n.nvmlDeviceGetClockInfo(h(0), 3)") == NOT_SUPPORTED
    memory_temp = nvml.ok("n.nvmlDeviceGetFieldValues(h(0), [n.NVML_FI_DEV_MEMORY_TEMP])")
    assert memory_temp[0]["nvmlReturn"] == NOT_SUPPORTED
    assert nvml.error("n.nvmlDeviceGetPowerUsage(h(1))") == NOT_SUPPORTED
    assert nvml.ok("n.nvmlDeviceGetCurrPcieLinkGeneration(h(1))") == 4
    assert nvml.error("n.nvmlDeviceGetCurrPcieLinkWidth(h(1))") == NOT_SUPPORTED
    assert nvml.error("n.nvmlSystemGetCudaDriverVersion()") == NOT_SUPPORTED
    # The real card fields stay readable beside the unsupported ones.
    assert nvml.ok("n.nvmlDeviceGetName(h(0))") == "NVIDIA RTX A6000"


def test_processes_by_kind_with_pids_memory_and_sm_utilization(scenario_file: Path, nvml: Nvml):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    try:
        dev = make_device(
            0,
            processes=[
                {
                    "pid": live.pid,
                    "used_memory_bytes": 4 << 30,
                    "kind": "compute",
                    "sm_util_percent": 55,
                },
                {"pid": exited.pid, "used_memory_bytes": None, "kind": "compute"},
                {
                    "pid": 4242,
                    "used_memory_bytes": 1 << 20,
                    "kind": "graphics",
                    "sm_util_percent": 3,
                },
            ],
        )
        write_scenario(scenario_file, make_scenario(devices=[dev, make_device(1)]))
        nvml.ok("n.nvmlInit()")
        compute = nvml.ok("n.nvmlDeviceGetComputeRunningProcesses(h(0))")
        assert [(p["pid"], p["usedGpuMemory"]) for p in compute] == [
            (live.pid, 4 << 30),
            (exited.pid, None),  # NVML_VALUE_NOT_AVAILABLE, which pynvml turns into None
        ]
        v2 = nvml.ok("n.nvmlDeviceGetComputeRunningProcesses_v2(h(0))")
        assert [p["pid"] for p in v2] == [live.pid, exited.pid]
        graphics = nvml.ok("n.nvmlDeviceGetGraphicsRunningProcesses(h(0))")
        assert [(p["pid"], p["usedGpuMemory"]) for p in graphics] == [(4242, 1 << 20)]
        assert nvml.ok("n.nvmlDeviceGetComputeRunningProcesses(h(1))") == []
        samples = nvml.ok("n.nvmlDeviceGetProcessUtilization(h(0), 0)")
        # Sorted on both sides: the live child's pid may fall either side of 4242.
        assert sorted((s["pid"], s["smUtil"]) for s in samples) == sorted(
            [(4242, 3), (live.pid, 55)]
        )
        assert all(s["timeStamp"] > time.time() * 1e6 - 60e6 for s in samples)
        # No process with a utilisation sample: NVML's NOT_FOUND.
        assert nvml.error("n.nvmlDeviceGetProcessUtilization(h(1), 0)") == 6
        # The two-call protocol: a NULL buffer asks for the size.
        size_probe = (
            "run('''\nimport ctypes\nc = ctypes.c_uint(0)\n"
            "fn = n._nvmlGetFunctionPointer('nvmlDeviceGetComputeRunningProcesses_v3')\n"
            "result = [fn(h(0), ctypes.byref(c), None), c.value]\n''')"
        )
        assert nvml.ok(size_probe) == [INSUFFICIENT_SIZE, 2]
    finally:
        live.kill()
        live.wait()


def test_errors_by_function_name_on_one_device(scenario_file: Path, nvml: Nvml):
    dev = make_device(
        0,
        errors={
            "nvmlDeviceGetTemperature": "NO_PERMISSION",
            "nvmlDeviceGetPowerUsage": "NVML_ERROR_UNKNOWN",
            "nvmlDeviceGetPciInfo_v3": "TIMEOUT",
            "nvmlDeviceGetComputeRunningProcesses": "GPU_IS_LOST",
            "nvmlDeviceGetCurrentClocksThrottleReasons": "NOT_SUPPORTED",
            "nvmlDeviceGetMemoryInfo": "NO_PERMISSION",
        },
    )
    write_scenario(
        scenario_file,
        make_scenario(
            devices=[dev, make_device(1)], errors={"nvmlSystemGetDriverVersion": "NO_PERMISSION"}
        ),
    )
    nvml.ok("n.nvmlInit()")
    assert nvml.error("n.nvmlDeviceGetTemperature(h(0), 0)") == NO_PERMISSION
    assert nvml.error("n.nvmlDeviceGetPowerUsage(h(0))") == UNKNOWN
    assert nvml.error("n.nvmlDeviceGetPciInfo(h(0))") == TIMEOUT
    assert nvml.error("n.nvmlDeviceGetComputeRunningProcesses(h(0))") == GPU_IS_LOST
    assert nvml.error("n.nvmlDeviceGetComputeRunningProcesses_v2(h(0))") == GPU_IS_LOST
    # Old and new spelling of the clock-reason call are one function.
    assert nvml.error("n.nvmlDeviceGetCurrentClocksEventReasons(h(0))") == NOT_SUPPORTED
    assert nvml.error("n.nvmlDeviceGetCurrentClocksThrottleReasons(h(0))") == NOT_SUPPORTED
    # Unversioned key matches the versioned symbol too.
    assert nvml.error("n.nvmlDeviceGetMemoryInfo(h(0), version=n.nvmlMemory_v2)") == NO_PERMISSION
    assert nvml.error("n.nvmlSystemGetDriverVersion()") == NO_PERMISSION
    # Calls not named, and the other card, answer normally.
    assert nvml.ok("n.nvmlDeviceGetUtilizationRates(h(0))") == {"gpu": 10, "memory": 5}
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(1), 0)") == 45
    assert nvml.ok("n.nvmlDeviceGetPowerUsage(h(1))") == 120000


def test_hang_delays_only_the_named_call_on_its_device(scenario_file: Path, nvml: Nvml):
    dev = make_device(0, hang_ms={"nvmlDeviceGetTemperature": 1500})
    write_scenario(scenario_file, make_scenario(devices=[dev, make_device(1)]))
    nvml.ok("n.nvmlInit()")
    result = nvml.ok(
        "run('''\n"
        "slow = {}\n"
        "def hung():\n"
        "    t = time.monotonic()\n"
        "    slow['value'] = n.nvmlDeviceGetTemperature(h(0), 0)\n"
        "    slow['took'] = time.monotonic() - t\n"
        "th = threading.Thread(target=hung)\n"
        "th.start()\n"
        "time.sleep(0.2)  # the hung call begun (in the child; checked by still_hung)\n"
        "fast = []\n"
        "for _ in range(5):\n"
        "    t = time.monotonic()\n"
        "    n.nvmlDeviceGetTemperature(h(1), 0)\n"
        "    n.nvmlDeviceGetPowerUsage(h(0))\n"
        "    fast.append(time.monotonic() - t)\n"
        "still_hung = th.is_alive()\n"
        "th.join()\n"
        "result = [slow['value'], slow['took'], max(fast), still_hung]\n"
        "''')"
    )
    value, slow_took, fast_max, still_hung = result
    assert value == 45
    assert slow_took >= 1.5
    assert fast_max < 0.5
    assert still_hung, "the other calls should have finished while the hung call waited"


def test_lost_card_latches_until_reinit(scenario_file: Path, nvml: Nvml):
    scenario = _three_cards_init(scenario_file, nvml, {})
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(1), 0)") == 45
    nvml.ok("globals().__setitem__('h1', h(1))")

    scenario["devices"][1]["lost"] = True
    write_scenario(scenario_file, scenario)
    wait_until(
        lambda: "error" in nvml.ask("n.nvmlDeviceGetTemperature(h1, 0)"),
        timeout=SEEN_WITHIN_S,
        interval=0.02,
        what="the lost card seen",
    )
    for call in [
        "n.nvmlDeviceGetTemperature(h1, 0)",
        "n.nvmlDeviceGetName(h1)",
        "n.nvmlDeviceGetUUID(h1)",
        "n.nvmlDeviceGetMemoryInfo(h1)",
        "n.nvmlDeviceGetComputeRunningProcesses(h1)",
        "n.nvmlDeviceGetHandleByIndex(1)",
    ]:
        assert nvml.error(call) == GPU_IS_LOST, call
    assert nvml.ok("n.nvmlDeviceGetCount()") == 3
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), 0)") == 45
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(2), 0)") == 45

    scenario["devices"][1]["lost"] = False
    write_scenario(scenario_file, scenario)
    until_scenario_seen()
    assert nvml.error("n.nvmlDeviceGetTemperature(h1, 0)") == GPU_IS_LOST  # still latched
    nvml.ok("n.nvmlShutdown()")
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(1), 0)") == 45
    assert nvml.ok("n.nvmlDeviceGetTemperature(h1, 0)") == 45  # same handle as before


def test_lost_at_init_and_removed_card(scenario_file: Path, nvml: Nvml):
    scenario = _three_cards_init(scenario_file, nvml, {2: "lost"})
    assert nvml.ok("n.nvmlDeviceGetCount()") == 3
    assert nvml.error("n.nvmlDeviceGetHandleByIndex(2)") == GPU_IS_LOST

    nvml.ok("globals().__setitem__('h0', h(0))")
    del scenario["devices"][0]
    write_scenario(scenario_file, scenario)
    until_scenario_seen()
    # Removed while initialised: the old handle reads as fallen off the bus.
    assert nvml.error("n.nvmlDeviceGetTemperature(h0, 0)") == GPU_IS_LOST
    nvml.ok("n.nvmlShutdown()")
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetCount()") == 2
    assert nvml.ok("n.nvmlDeviceGetUUID(h(0))") == "GPU-00000001-1111-2222-3333-444444444444"
    assert nvml.error("n.nvmlDeviceGetHandleByIndex(2)") == 2  # INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("DRIVER_NOT_LOADED", DRIVER_NOT_LOADED),
        ("LIBRARY_NOT_FOUND", LIBRARY_NOT_FOUND),
        ("NO_PERMISSION", NO_PERMISSION),
    ],
)
def test_init_error_then_driver_loads(scenario_file: Path, nvml: Nvml, name: str, code: int):
    scenario = make_scenario(2, init_error=name)
    write_scenario(scenario_file, scenario)
    assert nvml.error("n.nvmlInit()") == code
    assert nvml.error("n.nvmlDeviceGetCount()") == UNINITIALIZED
    assert nvml.error("n.nvmlSystemGetDriverVersion()") == UNINITIALIZED
    assert nvml.error("n.nvmlInit()") == code
    scenario["init_error"] = None
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetCount()") == 2


def test_init_and_shutdown_are_reference_counted(nvml: Nvml):
    assert nvml.error("n.nvmlDeviceGetCount()") == UNINITIALIZED
    nvml.ok("n.nvmlInit()")
    nvml.ok("globals().__setitem__('h0', h(0))")
    nvml.ok("n.nvmlInit()")
    nvml.ok("n.nvmlShutdown()")
    assert nvml.ok("n.nvmlDeviceGetTemperature(h0, 0)") == 45
    nvml.ok("n.nvmlShutdown()")
    assert nvml.error("n.nvmlDeviceGetTemperature(h0, 0)") == UNINITIALIZED
    assert nvml.error("n.nvmlShutdown()") == UNINITIALIZED


def test_no_scenario_means_no_driver(tmp_path: Path, fake_nvml_dir: Path):
    child = Nvml(tmp_path / "missing.json", tmp_path / "child.stderr")
    try:
        assert child.error("n.nvmlInit()") == DRIVER_NOT_LOADED
        assert child.error("n.nvmlInit()") == DRIVER_NOT_LOADED
        assert child.stderr().count("cannot stat scenario") == 1
        write_scenario(tmp_path / "missing.json", make_scenario(1))
        child.ok("n.nvmlInit()")
        assert child.ok("n.nvmlDeviceGetCount()") == 1
    finally:
        child.close()


def test_edits_are_seen_within_a_second(scenario_file: Path, nvml: Nvml):
    scenario = make_scenario(2)
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(1), 0)") == 45
    for temperature in (71, 88, 52):
        scenario["devices"][1]["temperature_c"] = temperature
        scenario["devices"][1]["processes"] = [{"pid": temperature, "used_memory_bytes": 1}]
        write_scenario(scenario_file, scenario)
        wait_until(
            lambda t=temperature: nvml.ok("n.nvmlDeviceGetTemperature(h(1), 0)") == t,
            timeout=SEEN_WITHIN_S,
            interval=0.01,
            what=f"the edit to {temperature} seen",
        )
        procs = nvml.ok("n.nvmlDeviceGetComputeRunningProcesses(h(1))")
        assert [p["pid"] for p in procs] == [temperature]


def test_unparseable_edit_keeps_last_good_state(scenario_file: Path, nvml: Nvml):
    scenario = make_scenario(2)
    nvml.ok("n.nvmlInit()")
    scenario["devices"][0]["temperature_c"] = 66
    write_scenario(scenario_file, scenario)
    until_scenario_seen()
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), 0)") == 66
    tmp = scenario_file.with_suffix(".bad")
    tmp.write_text('{"devices": [ {"temperature_c": 99,, } ')
    os.replace(tmp, scenario_file)
    for _ in range(5):
        # A pause, not a wait: calls a recheck interval apart each look at the broken file.
        time.sleep(1.2 * SCENARIO_RECHECK_S)
        assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), 0)") == 66
    log = nvml.stderr()
    assert log.count("does not parse") == 1, log
    assert "line 1 column" in log
    scenario["devices"][0]["temperature_c"] = 67
    write_scenario(scenario_file, scenario)
    until_scenario_seen()
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), 0)") == 67


def test_json_reader_handles_escapes_numbers_and_nesting(scenario_file: Path, nvml: Nvml):
    raw = json.dumps(make_scenario(1))
    raw = raw.replace('"NVIDIA GeForce RTX 4090"', '"RTX \\"4090\\" \\u00e9\\ud83d\\ude80\\n\\/"')
    raw = raw.replace('"energy_mj": 1000000', '"energy_mj": 18446744073709551000')
    raw = raw.replace('"temperature_c": 45', '"temperature_c": 4.5e1')
    scenario_file.write_text(raw)
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetName(h(0))") == 'RTX "4090" \u00e9\U0001f680\n/'
    assert nvml.ok("n.nvmlDeviceGetTotalEnergyConsumption(h(0))") == 18446744073709551000
    assert nvml.ok("n.nvmlDeviceGetTemperature(h(0), 0)") == 45


def _event_set_up(nvml: Nvml, devices: str = "[0, 1]") -> None:
    nvml.ok("n.nvmlInit()")
    nvml.ok("globals().__setitem__('es', n.nvmlEventSetCreate())")
    nvml.ok(
        f"[n.nvmlDeviceRegisterEvents(h(i), n.nvmlEventTypeXidCriticalError, es) "
        f"for i in {devices}]"
    )


_WAIT = (
    "(lambda d: [n.nvmlDeviceGetIndex(d.device), d.eventType, d.eventData])"
    "(n.nvmlEventSetWait_v2(es, {}))"
)


def test_xid_events_delivered_once_in_order_and_on_append(scenario_file: Path, nvml: Nvml):
    scenario = make_scenario(2)
    scenario["devices"][1]["xid_events"] = [79, 13]
    write_scenario(scenario_file, scenario)
    _event_set_up(nvml)
    assert nvml.ok("n.nvmlDeviceGetSupportedEventTypes(h(0))") & 0x8
    assert nvml.ok(_WAIT.format(1000)) == [1, 8, 79]
    assert nvml.ok(_WAIT.format(1000)) == [1, 8, 13]
    started = time.monotonic()
    assert nvml.error(_WAIT.format(300)) == TIMEOUT
    assert 0.25 <= time.monotonic() - started < 2.0

    # Appended while a wait is blocked: it wakes promptly with just the new code.
    nvml.send(_WAIT.format(5000))
    # A pause: the child cannot be seen inside the wait. Should it enter late, the codes are
    # there when it does and the checks below hold all the same.
    time.sleep(0.3)
    scenario["devices"][1]["xid_events"] = [79, 13, 48]
    scenario["devices"][0]["xid_events"] = [62]
    write_scenario(scenario_file, scenario)
    written = time.monotonic()
    first = nvml.receive()
    assert time.monotonic() - written < 5.0 / 2  # woken, not at the 5 s wait's end
    second = nvml.ok(_WAIT.format(1000))
    assert sorted([first["ok"], second]) == [[0, 8, 62], [1, 8, 48]]
    assert nvml.error(_WAIT.format(100)) == TIMEOUT
    nvml.ok("n.nvmlEventSetFree(es)")


def test_xid_only_for_registered_devices_and_unsupported_without_list(
    scenario_file: Path, nvml: Nvml
):
    scenario = make_scenario(2)
    scenario["devices"][0]["xid_events"] = [31]
    scenario["devices"][1]["xid_events"] = None
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlInit()")
    assert nvml.error("n.nvmlDeviceGetSupportedEventTypes(h(1))") == NOT_SUPPORTED
    nvml.ok("globals().__setitem__('es', n.nvmlEventSetCreate())")
    assert nvml.error("n.nvmlDeviceRegisterEvents(h(1), 8, es)") == NOT_SUPPORTED
    assert nvml.error(_WAIT.format(150)) == TIMEOUT  # device 0 not registered
    nvml.ok("n.nvmlDeviceRegisterEvents(h(0), 8, es)")
    assert nvml.ok(_WAIT.format(1000)) == [0, 8, 31]


def test_event_wait_does_not_block_other_threads(scenario_file: Path, nvml: Nvml):
    _event_set_up(nvml)
    result = nvml.ok(
        "run('''\n"
        "es = n.nvmlEventSetCreate()\n"
        "n.nvmlDeviceRegisterEvents(h(0), 8, es)\n"
        "out = {}\n"
        "def waiter():\n"
        "    try:\n"
        "        n.nvmlEventSetWait_v2(es, 1500)\n"
        "    except n.NVMLError as err:\n"
        "        out['code'] = err.value\n"
        "th = threading.Thread(target=waiter)\n"
        "th.start()\n"
        "time.sleep(0.1)  # the waiter inside its wait (a pause in the child)\n"
        "t = time.monotonic()\n"
        "for _ in range(20):\n"
        "    n.nvmlDeviceGetTemperature(h(0), 0)\n"
        "took = time.monotonic() - t\n"
        "th.join()\n"
        "result = [took, out.get('code')]\n"
        "''')"
    )
    took, code = result
    assert took < 0.5
    assert code == TIMEOUT


def test_threads_hammering_during_reloads(scenario_file: Path, nvml: Nvml):
    scenario = make_scenario(4)
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlInit()")
    nvml.send(
        "run('''\n"
        "errors, counts = [], [0] * 6\n"
        "stop = time.monotonic() + 2.0\n"
        "def worker(k):\n"
        "    while time.monotonic() < stop:\n"
        "        for i in range(n.nvmlDeviceGetCount()):\n"
        "            try:\n"
        "                d = h(i)\n"
        "                t = n.nvmlDeviceGetTemperature(d, 0)\n"
        "                if t not in (45, 80):\n"
        "                    errors.append(('temperature', t))\n"
        "                n.nvmlDeviceGetName(d)\n"
        "                n.nvmlDeviceGetMemoryInfo(d)\n"
        "                n.nvmlDeviceGetComputeRunningProcesses(d)\n"
        "                n.nvmlDeviceGetUtilizationRates(d)\n"
        "                counts[k] += 1\n"
        "            except n.NVMLError as err:\n"
        "                if err.value != 15:\n"
        "                    errors.append(('nvml', err.value))\n"
        "threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]\n"
        "for th in threads: th.start()\n"
        "for th in threads: th.join()\n"
        "result = [errors[:5], counts]\n"
        "''')"
    )
    deadline = time.monotonic() + 2.2
    flip = 0
    while time.monotonic() < deadline:
        flip += 1
        for dev in scenario["devices"]:
            dev["temperature_c"] = 80 if flip % 2 else 45
            dev["processes"] = [{"pid": p, "used_memory_bytes": p} for p in range(flip % 7)]
        write_scenario(scenario_file, scenario)
        time.sleep(0.01)  # a pace, not a wait: a new scenario every 10 ms while calls run
    answer = nvml.receive()
    assert "ok" in answer, answer
    errors, counts = answer["ok"]
    assert errors == []
    assert all(c > 10 for c in counts), counts
    assert nvml.proc.poll() is None, "child crashed"
    assert flip > 50


def test_example_scenario_loads_cleanly(tmp_path: Path, fake_nvml_dir: Path):
    example = fake_nvml_dir / "scenarios" / "example.json"
    child = Nvml(example, tmp_path / "child.stderr")
    try:
        child.ok("n.nvmlInit()")
        assert child.ok("n.nvmlDeviceGetCount()") == 2
        assert child.ok("n.nvmlDeviceGetName(h(0))") == "NVIDIA A100-SXM4-80GB"
        assert child.ok("n.nvmlDeviceGetMaxPcieLinkWidth(h(1))") == 16
        assert child.ok("n.nvmlDeviceGetCurrPcieLinkWidth(h(1))") == 1
        assert child.error("n.nvmlDeviceGetSerial(h(1))") == NOT_SUPPORTED
        assert child.ok("n.nvmlDeviceGetNumFans(h(0))") == 0
        assert child.error("n.nvmlDeviceGetFanSpeed(h(0))") == NOT_SUPPORTED
        assert child.stderr() == ""
    finally:
        child.close()


def test_field_of_wrong_type_answers_not_supported_and_says_so(scenario_file: Path, nvml: Nvml):
    dev = make_device(0, temperature_c="hot", pcie=[4, 16])
    write_scenario(scenario_file, make_scenario(devices=[dev]))
    nvml.ok("n.nvmlInit()")
    assert nvml.error("n.nvmlDeviceGetTemperature(h(0), 0)") == NOT_SUPPORTED
    assert nvml.error("n.nvmlDeviceGetCurrPcieLinkGeneration(h(0))") == NOT_SUPPORTED
    assert nvml.ok("n.nvmlDeviceGetPowerUsage(h(0))") == 120000
    log = nvml.stderr()
    assert 'device 0 field "temperature_c" has type string, expected number' in log
    assert 'device 0 field "pcie" has type array, expected object' in log


def test_uncounted_card_is_left_out_of_the_count_and_the_indices(scenario_file: Path, nvml: Nvml):
    scenario = _three_cards_init(scenario_file, nvml, {1: "uncounted"})
    assert nvml.ok("n.nvmlDeviceGetCount()") == 2
    assert nvml.ok("n.nvmlDeviceGetUUID(h(1))") == "GPU-00000002-1111-2222-3333-444444444444"
    assert nvml.error("n.nvmlDeviceGetHandleByPciBusId(b'00000000:02:00.0')") == NOT_FOUND

    # The driver brings it up: it is counted from the next enumeration on, in list order.
    scenario["devices"][1]["uncounted"] = False
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlShutdown()")
    nvml.ok("n.nvmlInit()")
    assert nvml.ok("n.nvmlDeviceGetCount()") == 3
    assert nvml.ok("n.nvmlDeviceGetUUID(h(1))") == "GPU-00000001-1111-2222-3333-444444444444"


def test_recovery_action_field_per_card(scenario_file: Path, nvml: Nvml):
    scenario = make_scenario(2)
    scenario["devices"][0]["recovery_action"] = 2  # NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
    write_scenario(scenario_file, scenario)
    nvml.ok("n.nvmlInit()")
    ask = "[(v.nvmlReturn, v.value.uiVal) for v in n.nvmlDeviceGetFieldValues(h({}), [230])]"
    assert nvml.ok(ask.format(0)) == [[0, 2]]
    assert nvml.ok(ask.format(1))[0][0] == NOT_SUPPORTED
