"""A real forged on two (fake) 80 GB GPUs: jobs placed by memory, run side by side, each seeing its own GPU.

The GPU inventory is the only fake (FORGE_FAKE_GPUS, the NVML boundary); the daemon, its SQLite queue, the
scheduler and the runners are real, and each runner reports the CUDA_VISIBLE_DEVICES it was started with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from forge.v1 import jobs_pb2 as S
from harness import EXAMPLE_CSV, Forged, forge_env, running_forged

GIB = 1 << 30
TWO_H100 = json.dumps([{"index": 0}, {"index": 1}])


def _sized(spec: S.JobSpec, gib: int) -> S.JobSpec:
    sized = S.JobSpec()
    sized.CopyFrom(spec)
    sized.memory_bytes = gib * GIB
    return sized


def _visible_devices(forged: Forged, job_id: str) -> str:
    """What the runner says it was given, from its own log line."""
    prefix = "GPUs given to this job: CUDA_VISIBLE_DEVICES="

    def said(job: S.Job) -> bool:
        return any(e.log.message.startswith(prefix) for e in forged.events(job.id))

    forged.wait_until(job_id, said, timeout=120)
    line = next(e.log.message for e in forged.events(job_id) if e.log.message.startswith(prefix))
    return line.removeprefix(prefix)


def test_jobs_run_side_by_side_on_their_own_gpus_and_wait_for_room(tmp_path: Path) -> None:
    env = forge_env(FORGE_FAKE_GPUS=TWO_H100)
    with running_forged(tmp_path / "state", "--jobs-per-gpu", "2", env=env) as forged:
        long_run = forged.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)
        a = forged.submit(_sized(long_run, 50))
        b = forged.submit(_sized(long_run, 50))
        running = [forged.wait_until(j.id, lambda j: j.state == S.JOB_STATE_RUNNING) for j in (a, b)]

        # Both at once, one per GPU, and each runner sees exactly its own GPU.
        assert forged.get(a.id).state == S.JOB_STATE_RUNNING
        assert sorted(tuple(j.gpu_indices) for j in running) == [(0,), (1,)]
        for job in running:
            assert _visible_devices(forged, job.id) == str(job.gpu_indices[0])

        # A third 50 GiB job fits beside neither (80 - 50 - 1 GiB of headroom is left on each) and says so.
        c = forged.submit(_sized(long_run, 50))
        assert c.state == S.JOB_STATE_QUEUED
        assert c.wait_reason.startswith("next in line; needs 50 GiB, the largest free GPU has 29 GiB")
        # A pipeline check has no memory estimate, so it waits for a GPU of its own.
        whole = forged.submit(long_run)
        assert whole.spec.memory_bytes == 0
        assert (
            whole.wait_reason
            == "1 job ahead; needs a whole GPU (the job has no memory estimate) and none is idle"
        )

        # More than any GPU here has is refused at submit, in one line, and never queued.
        with pytest.raises(grpc.RpcError) as refused:
            forged.submit(_sized(long_run, 100))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = refused.value.details()
        assert message.startswith("the job needs about 100 GiB of GPU memory and the largest GPU here")
        assert "\n" not in message
        assert len(forged.jobs.List(S.ListJobsRequest(), timeout=10).jobs) == 4

        # When a job ends its reservation goes with it: the waiting job takes the freed GPU.
        first = running[0]
        forged.jobs.Cancel(S.CancelJobRequest(id=first.id), timeout=30)
        started = forged.wait_until(c.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        assert tuple(started.gpu_indices) == tuple(first.gpu_indices)
        assert forged.get(first.id).gpu_indices == [], "a finished job holds no GPU"
        assert [a.number for a in started.attempts] == [1]

        for job in (b, c, whole):
            forged.jobs.Cancel(S.CancelJobRequest(id=job.id), timeout=30)


def test_a_large_job_reserves_its_gpu_so_smaller_jobs_do_not_starve_it(tmp_path: Path) -> None:
    env = forge_env(FORGE_FAKE_GPUS=json.dumps([{"index": 0}]))
    with running_forged(tmp_path / "state", "--jobs-per-gpu", "3", env=env) as forged:
        long_run = forged.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)
        small = forged.submit(_sized(long_run, 40))
        forged.wait_until(small.id, lambda j: j.state == S.JOB_STATE_RUNNING)

        # 39 GiB are free: the 60 GiB job waits, and holds the GPU for itself.
        large = forged.submit(_sized(long_run, 60))
        reserved = "next in line; needs 60 GiB, the largest free GPU has 39 GiB; reserved GPU 0 for it"
        forged.wait_until(large.id, lambda j: j.wait_reason == reserved, timeout=30)
        # A 20 GiB job would fit in the 39 GiB now, and then the large job would need two jobs to end, then
        # three, for ever: it waits behind the reservation instead, and says so.
        later = forged.submit(_sized(long_run, 20))
        behind = f"1 job ahead; reserved GPU 0 for job {large.id}, which is ahead and waits for room there"
        forged.wait_until(later.id, lambda j: j.wait_reason == behind, timeout=30)
        assert forged.get(later.id).state == S.JOB_STATE_QUEUED

        # The reason reaches `forgectl jobs`, under the table.
        shown = subprocess.run(
            [sys.executable, "-m", "forgectl", "--daemon", forged.address, "jobs"],
            env={**env, "COLUMNS": "250"},  # one line per reason, as on a wide terminal
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"{later.id}  waiting: {behind}" in shown.stdout.splitlines()

        # The small job ends: the large one takes its GPU, and the 20 GiB job does not fit beside it.
        forged.jobs.Cancel(S.CancelJobRequest(id=small.id), timeout=30)
        started = forged.wait_until(large.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        assert tuple(started.gpu_indices) == (0,)
        waiting = forged.wait_until(later.id, lambda j: "needs 20 GiB" in j.wait_reason, timeout=30)
        assert waiting.state == S.JOB_STATE_QUEUED
        assert waiting.wait_reason.startswith("next in line; needs 20 GiB, the largest free GPU has 19 GiB")

        for job in (large, later):
            forged.jobs.Cancel(S.CancelJobRequest(id=job.id), timeout=30)
