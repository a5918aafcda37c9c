"""Which GPUs a job runs on: enough free memory for its estimate and a free slot, or why it has to wait.

Pure: an inventory (forged/hardware/nvml.py) and the jobs already placed in, a decision out. A GPU's memory
for a new job is the smaller of what NVML says is free and its total less what placed jobs reserved, less a
fixed headroom: a job that has just started has not allocated yet (NVML still shows the memory free), and one
that has allocated is already missing from NVML's free figure, so taking the smaller never counts a job twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forged.hardware.nvml import GpuInfo

GIB = 1 << 30
# Kept free on every GPU: the CUDA context of other processes, allocator growth past the estimate, and the
# seconds between NVML refreshes.
HEADROOM_BYTES = 1 * GIB


@dataclass(frozen=True)
class Need:
    """What a job asks for: `gpus` GPUs with `memory_bytes` free on each (0: unknown, so a whole GPU)."""

    gpus: int = 1
    memory_bytes: int = 0

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Need:
        """From a stored JobSpec (protobuf JSON: uint64 comes back as a string)."""
        return cls(gpus=max(1, int(spec.get("gpus") or 0)), memory_bytes=int(spec.get("memory_bytes") or 0))

    def per_gpu(self) -> str:
        return gib(self.memory_bytes) if self.memory_bytes else "a whole GPU"


@dataclass(frozen=True)
class Placed:
    """A running job's hold on GPUs."""

    job_id: str
    gpu_indices: tuple[int, ...]
    memory_bytes: int  # reserved on each of its GPUs; 0: the whole GPU


@dataclass(frozen=True)
class Reservation:
    """GPUs held for the first job in line that does not fit yet. Later jobs start on other GPUs, or on these
    only in the memory that stays free beside this job's estimate: with no run-time estimates to tell which
    jobs end in time, that is the one kind of backfill that never delays it."""

    job_id: str
    gpu_indices: tuple[int, ...]
    memory_bytes: int

    def hold(self) -> Placed:
        return Placed(self.job_id, self.gpu_indices, self.memory_bytes)


@dataclass(frozen=True)
class Decision:
    gpu_indices: tuple[int, ...] = ()
    wait_reason: str = ""  # set when the job cannot be placed now

    @property
    def placed(self) -> bool:
        return not self.wait_reason


def gib(n: int) -> str:
    return f"{n / GIB:.1f}".removesuffix(".0") + " GiB"


@dataclass(frozen=True)
class _Room:
    gpu: GpuInfo
    jobs: int
    free: int  # bytes a new job may use, headroom already taken off


def _rooms(gpus: Sequence[GpuInfo], placed: Iterable[Placed]) -> list[_Room]:
    holds = list(placed)
    rooms = []
    for g in gpus:
        here = [p for p in holds if g.index in p.gpu_indices]
        reserved = sum(p.memory_bytes or g.memory_total_bytes for p in here)
        free = min(g.memory_free_bytes, g.memory_total_bytes - reserved) - HEADROOM_BYTES
        rooms.append(_Room(g, len(here), max(0, free)))
    return rooms


def place(need: Need, gpus: Sequence[GpuInfo], placed: Iterable[Placed], slots_per_gpu: int) -> Decision:
    """GPUs for `need` now, or why not. Idle GPUs first (no one to share compute with), then the tightest
    fit, so a later, larger job still finds a GPU with room."""
    rooms = _rooms(gpus, placed)
    open_rooms = [r for r in rooms if r.jobs < slots_per_gpu]
    if len(open_rooms) < need.gpus:
        return Decision(wait_reason=_busy(len(rooms), need.gpus, len(open_rooms)))
    if need.memory_bytes:
        fits = [r for r in open_rooms if r.free >= need.memory_bytes]
    else:
        fits = [r for r in open_rooms if r.jobs == 0]
    if len(fits) < need.gpus:
        return Decision(wait_reason=_short(need, open_rooms, len(fits)))
    fits.sort(key=lambda r: (r.jobs > 0, r.free, r.gpu.index))
    return Decision(gpu_indices=tuple(sorted(r.gpu.index for r in fits[: need.gpus])))


def reserve(need: Need, gpus: Sequence[GpuInfo], placed: Iterable[Placed]) -> tuple[int, ...]:
    """The GPUs a job that cannot be placed now waits for: of those big enough for it once empty, the ones
    nearest to having room (the least memory missing, then the fewest jobs to end), so it starts as soon
    as possible. Empty when this machine could never hold it (submit refuses such a job)."""
    big_enough = need.memory_bytes + HEADROOM_BYTES
    rooms = [r for r in _rooms(gpus, placed) if r.gpu.memory_total_bytes >= big_enough]
    if len(rooms) < need.gpus:
        return ()
    if need.memory_bytes:
        rooms.sort(key=lambda r: (max(0, need.memory_bytes - r.free), r.jobs, r.gpu.index))
    else:  # a whole GPU: every job on it has to end first
        rooms.sort(key=lambda r: (r.jobs, -r.free, r.gpu.index))
    return tuple(sorted(r.gpu.index for r in rooms[: need.gpus]))


def gpu_list(indices: Sequence[int]) -> str:
    return ("GPU " if len(indices) == 1 else "GPUs ") + ", ".join(map(str, indices))


def _busy(total: int, wanted: int, open_now: int) -> str:
    if wanted > 1 and open_now:
        return f"needs {wanted} GPUs; only {open_now} of {total} have a free slot"
    if total == 1:
        return "the GPU is busy"
    return "both GPUs busy" if total == 2 else f"all {total} GPUs busy"


def _short(need: Need, open_rooms: list[_Room], fitting: int) -> str:
    if not need.memory_bytes:
        return "needs a whole GPU (the job has no memory estimate) and none is idle"
    largest = max(r.free for r in open_rooms)
    if need.gpus == 1:
        return f"needs {gib(need.memory_bytes)}, the largest free GPU has {gib(largest)}"
    return f"needs {need.gpus} GPUs with {gib(need.memory_bytes)} free each; {fitting} have that now"


def never_fits(need: Need, gpus: Sequence[GpuInfo]) -> str:
    """Why this machine could not run the job even with every GPU idle; empty if it could."""
    if need.gpus > len(gpus):
        have = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"
        return f"the job asks for {need.gpus} GPUs and this machine has {have}: ask for at most {len(gpus)}"
    if not need.memory_bytes:
        return ""
    usable = sorted((g.memory_total_bytes - HEADROOM_BYTES for g in gpus), reverse=True)
    if usable[need.gpus - 1] >= need.memory_bytes:
        return ""
    biggest = max(gpus, key=lambda g: g.memory_total_bytes)
    return (
        f"the job needs about {gib(need.memory_bytes)} of GPU memory and the largest GPU here "
        f"({biggest.name}) has {gib(biggest.memory_total_bytes)}, {gib(HEADROOM_BYTES)} of which stays free: "
        "use method qlora, a smaller model, a smaller micro-batch or a shorter max_seq_len"
    )
