"""GPU inventory through NVML. No NVIDIA GPU is an answer, not an error."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

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


@dataclass
class Inventory:
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str = ""
    cuda_driver_version: str = ""
    message: str = ""
    cpu_count: int = 0
    memory_total_bytes: int = 0


def probe() -> Inventory:
    inv = Inventory(cpu_count=os.cpu_count() or 0, memory_total_bytes=psutil.virtual_memory().total)
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


class CachedProbe:
    """NVML calls are cheap but not free; status screens poll, so answers are reused for a few seconds."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: Inventory | None = None

    def get(self) -> Inventory:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl:
                self._value = probe()
                self._at = time.monotonic()
            return self._value
