"""The job lifecycle through a real forged on a real socket, with the real runner training the tiny model."""

from __future__ import annotations

from pathlib import Path

import grpc
import psutil
import pytest
from forge.v1 import artifacts_pb2, brain_pb2, jobs_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import EXAMPLE_CSV, TERMINAL, Forged, running_forged

S = jobs_pb2


def kinds(events: list[S.JobEvent]) -> list[str]:
    return [e.WhichOneof("payload") for e in events]


def states(events: list[S.JobEvent]) -> list[int]:
    return [e.state.state for e in events if e.WhichOneof("payload") == "state"]


def test_submit_and_watch_a_training_job_to_the_end(forged: Forged) -> None:
    job = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=12, eval_every=6))
    assert job.state == S.JOB_STATE_QUEUED and job.id.startswith("j-")

    events = forged.events(job.id, follow=True)

    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "sequence numbers have no gaps"
    assert states(events) == [S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED]
    steps = [e.step for e in events if e.WhichOneof("payload") == "step"]
    assert [s.step for s in steps] == list(range(1, 13))
    assert all(s.total_steps == 12 and s.tokens_per_second > 0 for s in steps)
    final = forged.get(job.id)
    assert final.state == S.JOB_STATE_SUCCEEDED
    assert final.metrics.steps == 12 and final.metrics.HasField("first_loss")
    assert final.metrics.HasField("first_val_loss") and final.metrics.HasField("final_val_loss")
    adapter = Path(final.artifacts["adapter"])
    assert (adapter / "adapter_config.json").is_file()
    assert [a.outcome for a in final.attempts] == ["succeeded"]


def test_a_watch_resumes_after_any_sequence_number(forged: Forged) -> None:
    job = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=4))
    everything = forged.events(job.id, follow=True)
    for cut in (0, 1, len(everything) // 2, len(everything) - 1, len(everything)):
        again = forged.events(job.id, after=cut)
        assert [e.seq for e in again] == [e.seq for e in everything[cut:]]
        assert again == everything[cut:]


def test_submit_is_idempotent_on_the_request_id(forged: Forged) -> None:
    spec = forged.train_spec(EXAMPLE_CSV, max_steps=2)
    first = forged.submit(spec, request_id="retry-me")
    second = forged.submit(spec, request_id="retry-me")
    assert first.id == second.id
    listed = forged.jobs.List(S.ListJobsRequest(), timeout=10).jobs
    assert [j.id for j in listed] == [first.id]
    # The retry after the job has started is still the same job, not a second run.
    forged.wait_until(first.id, lambda j: j.state != S.JOB_STATE_QUEUED)
    assert forged.submit(spec, request_id="retry-me").id == first.id
    forged.jobs.Cancel(S.CancelJobRequest(id=first.id), timeout=30)
    assert [j.id for j in forged.jobs.List(S.ListJobsRequest(), timeout=10).jobs] == [first.id]


def test_cancel_stops_a_running_job_and_its_process_group(forged: Forged) -> None:
    job = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=5000, checkpoint_every=1000))
    queued = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=5))
    assert forged.get(queued.id).queue_position == 1, "one job at a time: the second waits first in line"
    forged.wait_until(job.id, lambda j: j.metrics.steps >= 1)
    runner_pids = [
        p.pid for p in psutil.process_iter(["cmdline"]) if job.id in " ".join(p.info["cmdline"] or [])
    ]
    assert runner_pids, "the runner runs as its own process"

    # A queued job is cancelled at once, without ever running (the first job still holds the slot).
    assert forged.jobs.Cancel(S.CancelJobRequest(id=queued.id), timeout=10).state == S.JOB_STATE_CANCELLED
    assert [a.outcome for a in forged.get(queued.id).attempts] == []

    cancelled = forged.jobs.Cancel(S.CancelJobRequest(id=job.id), timeout=30)

    assert cancelled.state == S.JOB_STATE_CANCELLED
    assert not [p for p in runner_pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert forged.get(queued.id).state == S.JOB_STATE_CANCELLED, "a cancelled job never starts later"


def test_bad_requests_get_clear_statuses_and_the_daemon_stays_up(forged: Forged) -> None:
    def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert "\n" not in info.value.details()
        return info.value.code()

    assert code_of(lambda: forged.get("j-nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: forged.submit(S.JobSpec(name="x"))) == grpc.StatusCode.INVALID_ARGUMENT
    no_data = S.JobSpec(train=S.TrainSpec(model="tiny", train_data="sha256:" + "0" * 64))
    assert code_of(lambda: forged.submit(no_data)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_model = forged.train_spec(EXAMPLE_CSV, model="/no/such/model")
    assert code_of(lambda: forged.submit(bad_model)) == grpc.StatusCode.INVALID_ARGUMENT
    offline_repo = forged.train_spec(EXAMPLE_CSV, model="nobody/not-cached")
    assert code_of(lambda: forged.submit(offline_repo)) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(lambda: forged.brain.Prepare(brain_pb2.PrepareRequest(data="garbage"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    headless = iter([artifacts_pb2.UploadRequest(chunk=b"data without a header")])
    assert code_of(lambda: forged.artifacts.Upload(headless)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: forged.events("j-nope")) == grpc.StatusCode.NOT_FOUND

    health = health_pb2_grpc.HealthStub(forged.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _checkpointed(job: S.Job) -> bool:
    return job.metrics.steps >= 12


def test_kill_9_of_forged_mid_training_then_restart_finishes_the_job_exactly_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    total = 40
    with running_forged(state) as first:
        spec = first.train_spec(EXAMPLE_CSV, max_steps=total, checkpoint_every=5)
        job = first.submit(spec)
        first.wait_until(job.id, _checkpointed)
        first.kill9()

        second = Forged(state).start()
        try:
            events = second.events(job.id, follow=True)
            final = second.get(job.id)
        finally:
            second.cleanup()

    assert final.state == S.JOB_STATE_SUCCEEDED
    assert states(events).count(S.JOB_STATE_SUCCEEDED) == 1
    assert [a.outcome for a in final.attempts] == ["interrupted", "succeeded"]
    assert final.attempts[1].resumed_from_step >= 10, "the second attempt resumed from a checkpoint"
    steps_after_resume = [
        e.step.step
        for e in events
        if e.WhichOneof("payload") == "step" and e.seq > _seq_of_second_running(events)
    ]
    assert steps_after_resume[0] == final.attempts[1].resumed_from_step + 1
    assert steps_after_resume[-1] == total and final.metrics.steps == total
    # The adapter is written once, by the attempt that finished (each attempt reports its TensorBoard dir).
    adapters = [e for e in events if e.WhichOneof("payload") == "artifact" and e.artifact.name == "adapter"]
    assert len(adapters) == 1


def _seq_of_second_running(events: list[S.JobEvent]) -> int:
    running = [
        e.seq for e in events if e.WhichOneof("payload") == "state" and e.state.state == S.JOB_STATE_RUNNING
    ]
    return running[1]


def test_sigterm_checkpoints_running_jobs_and_requeues_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Forged(state).start()
    try:
        job = first.submit(first.train_spec(EXAMPLE_CSV, max_steps=30, checkpoint_every=100))
        first.wait_until(job.id, lambda j: j.metrics.steps >= 3)
        assert first.stop() == 0
    finally:
        first.cleanup()
    with running_forged(state) as second:
        interrupted = second.get(job.id)
        assert interrupted.attempts[0].outcome == "interrupted"
        second.events(job.id, follow=True)
        final = second.get(job.id)
    assert final.state == S.JOB_STATE_SUCCEEDED
    # checkpoint_every=100 never fired: the only checkpoint is the one SIGTERM asked for.
    assert final.attempts[1].resumed_from_step >= 3
    assert final.state in TERMINAL
