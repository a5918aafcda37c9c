"""GPU placement (forged/queue/placement.py): memory that fits, slots per GPU, and why a job waits."""

from __future__ import annotations

from forged.hardware.nvml import GpuInfo
from forged.queue.placement import GIB, HEADROOM_BYTES, Need, Placed, Reservation, never_fits, place, reserve


def gpu(index: int, total_gib: int = 80, free_gib: float | None = None, name: str = "NVIDIA H100") -> GpuInfo:
    total = total_gib * GIB
    free = total if free_gib is None else int(free_gib * GIB)
    return GpuInfo(index, name, f"GPU-{index}", "9.0", "hopper", total, free, 0, False)


TWO = [gpu(0), gpu(1)]


def test_jobs_go_to_idle_gpus_first_so_two_jobs_run_side_by_side() -> None:
    first = place(Need(1, 20 * GIB), TWO, [], slots_per_gpu=2)
    assert first.gpu_indices == (0,)
    second = place(Need(1, 20 * GIB), TWO, [Placed("a", (0,), 20 * GIB)], slots_per_gpu=2)
    assert second.gpu_indices == (1,), "GPU 1 is idle: no one to share compute with"


def test_with_every_gpu_in_use_the_tightest_fit_is_chosen() -> None:
    placed = [Placed("a", (0,), 60 * GIB), Placed("b", (1,), 10 * GIB)]
    decision = place(Need(1, 15 * GIB), TWO, placed, slots_per_gpu=2)
    assert decision.gpu_indices == (0,), "GPU 0 has just enough left; GPU 1 keeps room for a big job"


def test_a_job_too_big_for_what_is_left_waits_and_says_so() -> None:
    placed = [Placed("a", (0,), 60 * GIB), Placed("b", (1,), 40 * GIB)]
    decision = place(Need(1, 50 * GIB), TWO, placed, slots_per_gpu=2)
    assert not decision.placed
    largest = 80 - 40 - HEADROOM_BYTES // GIB
    assert decision.wait_reason == f"needs 50 GiB, the largest free GPU has {largest} GiB"


def test_memory_other_processes_hold_counts_as_nvml_reports_it() -> None:
    # Someone else's 70 GiB on GPU 0 is not forge's reservation, but NVML's free figure shows it.
    gpus = [gpu(0, free_gib=10), gpu(1, free_gib=12.5)]
    decision = place(Need(1, 20 * GIB), gpus, [], slots_per_gpu=1)
    assert decision.wait_reason == "needs 20 GiB, the largest free GPU has 11.5 GiB"


def test_a_reservation_is_not_counted_twice_once_the_job_has_allocated() -> None:
    # Job a reserved 30 GiB and NVML now also shows them in use: 80 - 30 - 1 are left, not 80 - 60 - 1.
    decision = place(Need(1, 45 * GIB), [gpu(0, free_gib=50)], [Placed("a", (0,), 30 * GIB)], 2)
    assert decision.gpu_indices == (0,)


def test_full_slots_say_the_gpus_are_busy() -> None:
    one_each = [Placed("a", (0,), GIB), Placed("b", (1,), GIB)]
    assert place(Need(1, GIB), TWO, one_each, slots_per_gpu=1).wait_reason == "both GPUs busy"
    assert place(Need(1, GIB), [gpu(0)], one_each[:1], 1).wait_reason == "the GPU is busy"
    four = [gpu(i) for i in range(4)]
    full = [Placed(str(i), (i,), GIB) for i in range(4)]
    assert place(Need(1, GIB), four, full, 1).wait_reason == "all 4 GPUs busy"


def test_a_job_without_an_estimate_takes_a_whole_idle_gpu() -> None:
    decision = place(Need(1, 0), TWO, [Placed("a", (0,), GIB)], slots_per_gpu=2)
    assert decision.gpu_indices == (1,)
    blocked = place(Need(1, 0), TWO, [Placed("a", (0,), GIB), Placed("b", (1,), GIB)], 2)
    assert blocked.wait_reason == "needs a whole GPU (the job has no memory estimate) and none is idle"
    # ...and nothing else fits beside it.
    beside = place(Need(1, GIB), [gpu(0)], [Placed("a", (0,), 0)], slots_per_gpu=4)
    assert beside.wait_reason == "needs 1 GiB, the largest free GPU has 0 GiB"


def test_multi_gpu_jobs_need_that_many_gpus_with_room() -> None:
    assert place(Need(2, 30 * GIB), TWO, [], 1).gpu_indices == (0, 1)
    decision = place(Need(2, 30 * GIB), TWO, [Placed("a", (1,), 60 * GIB)], 2)
    assert decision.wait_reason == "needs 2 GPUs with 30 GiB free each; 1 have that now"


def test_a_job_that_no_gpu_here_could_hold_is_named_at_submit() -> None:
    assert never_fits(Need(1, 70 * GIB), TWO) == ""
    too_big = never_fits(Need(1, 90 * GIB), TWO)
    assert too_big.startswith(
        "the job needs about 90 GiB of GPU memory and the largest GPU here (NVIDIA H100)"
    )
    assert "\n" not in too_big and "qlora" in too_big
    assert (
        never_fits(Need(3, GIB), TWO)
        == "the job asks for 3 GPUs and this machine has 2 GPUs: ask for at most 2"
    )
    # A box whose largest card fits but whose second card does not, for a two-GPU job.
    mixed = [gpu(0, 80), gpu(1, 24, name="NVIDIA L4")]
    assert never_fits(Need(2, 40 * GIB), mixed) != ""


def test_a_stored_spec_reads_as_a_need() -> None:
    # protobuf's JSON mapping writes uint64 as a string.
    assert Need.of({"gpus": 0, "memory_bytes": "21474836480", "train": {}}) == Need(1, 20 * GIB)
    assert Need.of({"gpus": 2}) == Need(2, 0)


def test_a_waiting_job_reserves_the_gpu_nearest_to_having_room_for_it() -> None:
    placed = [Placed("a", (0,), 50 * GIB), Placed("b", (1,), 30 * GIB), Placed("c", (1,), 10 * GIB)]
    assert reserve(Need(1, 60 * GIB), TWO, placed) == (1,), "GPU 1 lacks 11 GiB, GPU 0 lacks 31"
    assert reserve(Need(1, 0), TWO, placed) == (0,), "a whole GPU: the one with fewer jobs to finish"
    assert reserve(Need(1, 60 * GIB), [gpu(0, total_gib=40), gpu(1)], placed) == (1,), "GPU 0 never fits"


def test_later_jobs_fit_on_a_reserved_gpu_only_beside_the_job_it_is_held_for() -> None:
    # Someone else's process holds 30 GiB of GPU 0; forge's job a holds 20 GiB of it and 40 GiB wait for it.
    gpus = [gpu(0, free_gib=30)]
    held = Reservation("big", (0,), 40 * GIB).hold()
    running = [Placed("a", (0,), 20 * GIB)]
    assert place(Need(1, 19 * GIB), gpus, [*running, held], slots_per_gpu=3).gpu_indices == (0,)
    beside = place(Need(1, 20 * GIB), gpus, [*running, held], slots_per_gpu=3)
    assert beside.wait_reason == "needs 20 GiB, the largest free GPU has 19 GiB"
