"""GPU inventory through NVML. No NVIDIA GPU is an answer, not an error.

`GpuMonitor` keeps a current inventory: a background thread re-probes every few seconds, so the scheduler
places jobs by the free memory the GPUs report now, and status screens never wait on the driver.

FORGE_FAKE_GPUS (tests only) replaces the NVML probe with a fixed inventory, a JSON list of GPUs such as
  [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85899345920}]
(missing fields get an idle Hopper's values). It is the hardware boundary: on a machine without GPUs it lets a
test run the real forged, scheduler and runners as if two 80 GB cards were there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psutil
import structlog

log = structlog.get_logger("forged.hardware")

FAKE_ENV = "FORGE_FAKE_GPUS"
DEFAULT_REFRESH_SECONDS = 5.0

ARCHITECTURES = {8: "ampere", 9: "hopper", 10: "blackwell", 12: "blackwell"}


def architecture(major: int, minor: int) -> str:
    if major == 8 and minor == 9:
        return "ada"
    if major == 7:
        return "volta" if minor == 0 else "turing"
    return ARCHITECTURES.get(major, f"sm_{major}{minor}")


@dataclass
class GpuInfo:
    index: int
    name: str
    uuid: str
    compute_capability: str
    architecture: str
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: int
    mig_enabled: bool

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name})"


@dataclass
class Inventory:
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str = ""
    cuda_driver_version: str = ""
    message: str = ""
    cpu_count: int = 0
    memory_total_bytes: int = 0


def _host() -> Inventory:
    return Inventory(cpu_count=os.cpu_count() or 0, memory_total_bytes=psutil.virtual_memory().total)


def probe() -> Inventory:
    """What NVML reports now (or FORGE_FAKE_GPUS's inventory, in tests)."""
    fake = os.environ.get(FAKE_ENV, "").strip()
    if fake:
        return fake_inventory(fake)
    inv = _host()
    try:
        import pynvml
    except ImportError:
        inv.message = "no NVIDIA GPU found (nvidia-ml-py is not installed)"
        return inv
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        inv.message = f"no NVIDIA GPU found ({exc})"
        return inv
    try:
        inv.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        inv.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
            except pynvml.NVMLError:
                util = 0
            try:
                mig = pynvml.nvmlDeviceGetMigMode(h)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            except pynvml.NVMLError:
                mig = False
            inv.gpus.append(
                GpuInfo(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                    compute_capability=f"{major}.{minor}",
                    architecture=architecture(major, minor),
                    memory_total_bytes=int(mem.total),
                    memory_free_bytes=int(mem.free),
                    utilization_percent=int(util),
                    mig_enabled=mig,
                )
            )
        if not inv.gpus:
            inv.message = "no NVIDIA GPU found (the driver reports none)"
    finally:
        pynvml.nvmlShutdown()
    return inv


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def fake_inventory(raw: str) -> Inventory:
    """FORGE_FAKE_GPUS's JSON list as an inventory; a malformed list is a start-up error, not a silent CPU."""
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise TypeError("not a list")
        gpus = [
            replace(_FAKE_DEFAULT, **{"index": i, "uuid": f"GPU-fake-{i}", **item})
            for i, item in enumerate(items)
        ]
    except (ValueError, TypeError) as e:
        raise ValueError(f"{FAKE_ENV} must be a JSON list of GPU objects: {e}") from e
    for g in gpus:
        if not g.memory_free_bytes or g.memory_free_bytes > g.memory_total_bytes:
            g.memory_free_bytes = g.memory_total_bytes
    inv = _host()
    inv.gpus = gpus
    inv.driver_version, inv.cuda_driver_version = "fake", "12.8"
    return inv


_FAKE_DEFAULT = GpuInfo(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    uuid="",
    compute_capability="9.0",
    architecture="hopper",
    memory_total_bytes=80 << 30,
    memory_free_bytes=0,
    utilization_percent=0,
    mig_enabled=False,
)


class GpuMonitor:
    """The latest inventory, refreshed by a background thread every `interval` seconds once started.

    `probe` is the hardware boundary (NVML by default). Before `start`, or with `interval` 0, `get` probes on
    demand when the last answer is older than `interval`. A probe that raises keeps the previous answer: a
    driver hiccup must not make the scheduler think the GPUs vanished.
    """

    def __init__(
        self, interval: float = DEFAULT_REFRESH_SECONDS, probe: Callable[[], Inventory] = probe
    ) -> None:
        self.interval = interval
        self._probe = probe
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: Inventory | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self) -> Inventory:
        with self._lock:
            value, at = self._value, self._at
        if value is not None and (self._thread is not None or time.monotonic() - at <= self.interval):
            return value
        return self.refresh()

    def refresh(self) -> Inventory:
        """Probe now and remember the answer."""
        try:
            value = self._probe()
        except Exception:
            with self._lock:
                previous = self._value
            if previous is None:
                raise
            log.warning("gpu_probe_failed", exc_info=True)
            return previous
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return value

    def start(self) -> None:
        if self._thread is not None or self.interval <= 0:
            return
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()


# The name the API modules were written against.
CachedProbe = GpuMonitor
