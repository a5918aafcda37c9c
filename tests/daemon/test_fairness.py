"""Sharing one box: users take turns in the queue, per-user limits hold, and a queued job says why."""

from __future__ import annotations

import time
from pathlib import Path

from forge.v1 import jobs_pb2 as S
from harness import EXAMPLE_CSV, Forged, bearer, create_token


def test_users_take_turns_so_one_users_many_jobs_do_not_starve_another(tmp_path: Path) -> None:
    state = tmp_path / "state"
    alice, bob = bearer(create_token(state, "alice")), bearer(create_token(state, "bob"))
    d = Forged(state, "--auth", "token", "--max-jobs", "1").start()
    try:
        d.metadata = alice
        alice_spec = d.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)
        d.metadata = bob
        bob_spec = d.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)

        d.metadata = alice
        a1 = d.submit(alice_spec)
        d.wait_until(a1.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        a2, a3 = d.submit(alice_spec), d.submit(alice_spec)
        d.metadata = bob
        b1, b2 = d.submit(bob_spec), d.submit(bob_spec)

        # Bob's first job goes ahead of Alice's second: Alice already has one running.
        assert (b1.queue_position, b2.queue_position) == (1, 3)
        assert "all 1 slot busy" in b2.wait_reason and "2 jobs ahead" in b2.wait_reason
        d.metadata = alice
        assert [d.get(j.id).queue_position for j in (a2, a3)] == [2, 4]

        # The order they start in. Each job is cancelled as soon as it runs: training them to the end would
        # only show the same order, slower (they are long, so none can end before it is seen running).
        owner = {a1.id: alice, a2.id: alice, a3.id: alice, b1.id: bob, b2.id: bob}
        started: list[str] = []
        deadline = time.monotonic() + 300
        while len(started) < len(owner) and time.monotonic() < deadline:
            for job_id, who in owner.items():
                d.metadata = who
                if job_id not in started and d.get(job_id).state == S.JOB_STATE_RUNNING:
                    started.append(job_id)
                    d.jobs.Cancel(S.CancelJobRequest(id=job_id), metadata=who, timeout=30)
            time.sleep(0.2)
        assert started == [a1.id, b1.id, a2.id, b2.id, a3.id]
    finally:
        d.cleanup()


def test_a_per_user_limit_lets_other_users_start_and_says_why_a_job_waits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    alice, bob = bearer(create_token(state, "alice")), bearer(create_token(state, "bob"))
    d = Forged(state, "--auth", "token", "--max-jobs", "2", "--max-jobs-per-user", "1").start()
    try:
        d.metadata = alice
        long_run = d.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)
        first = d.submit(long_run)
        d.wait_until(first.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        second = d.submit(long_run)
        d.metadata = bob
        bobs = d.submit(d.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000))

        d.wait_until(bobs.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        d.metadata = alice
        waiting = d.get(second.id)
        assert waiting.state == S.JOB_STATE_QUEUED, "a free slot, but Alice is at her limit"
        assert waiting.wait_reason == "alice already runs 1 job, the per-user limit"
        for job, who in ((first, alice), (second, alice), (bobs, bob)):
            d.jobs.Cancel(S.CancelJobRequest(id=job.id), metadata=who, timeout=30)
    finally:
        d.cleanup()
