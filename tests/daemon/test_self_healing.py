"""Self-healing through a real forged: injected OOM and NaN, each fixed and recorded as an attempt."""

from __future__ import annotations

import json
from pathlib import Path

from forge.v1 import jobs_pb2 as S
from harness import EXAMPLE_CSV, TERMINAL, forge_env, running_forged


def test_oom_then_nan_heal_themselves_and_each_remedy_is_recorded(tmp_path: Path) -> None:
    faults = [
        # Out of memory at step 3 while the micro-batch is above 2; NaN at step 6 while the learning rate
        # is above 4e-4 (the cosine schedule is at 5e-4 there, and at 2.5e-4 once halved).
        {"kind": "oom", "step": 3, "while_micro_batch_over": 2},
        {"kind": "nan", "step": 6, "while_lr_over": 4e-4},
    ]
    env = forge_env(FORGE_FAULTS=json.dumps(faults))
    with running_forged(tmp_path / "state", env=env) as forged:
        spec = forged.train_spec(
            EXAMPLE_CSV, max_steps=10, micro_batch_size=4, grad_accum=1, checkpoint_every=2
        )
        job = forged.submit(spec)
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL)

        assert done.state == S.JOB_STATE_SUCCEEDED, done.error
        assert [a.outcome for a in done.attempts] == ["oom", "diverged", "succeeded"]
        oom, nan, last = done.attempts
        assert "micro-batch 2 x accumulation 2" in oom.reason and "same effective batch 4" in oom.reason
        assert "learning rate 0.0005" in nan.reason
        assert (nan.resumed_from_step, last.resumed_from_step) == (2, 4)
        assert done.metrics.steps == 10
        assert (done.spec.train.micro_batch_size, done.spec.train.grad_accum) == (2, 2)
        assert done.spec.train.learning_rate == 5e-4
        # The user sees each remedy in the job's event stream.
        logs = [e.log.message for e in forged.events(job.id) if e.WhichOneof("payload") == "log"]
        assert sum(m.startswith("self-healing: ") for m in logs) == 2


def test_a_job_that_cannot_be_healed_fails_with_a_diagnosis(tmp_path: Path) -> None:
    env = forge_env(FORGE_FAULTS=json.dumps([{"kind": "oom", "step": 1}]))
    with running_forged(tmp_path / "state", env=env) as forged:
        spec = forged.train_spec(EXAMPLE_CSV, max_steps=4, micro_batch_size=2, grad_accum=1)
        job = forged.submit(spec)
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL)

        assert done.state == S.JOB_STATE_FAILED
        # The ladder: a smaller micro-batch, gradient checkpointing, a sequence cap; 4-bit needs a GPU, and
        # then nothing is left.
        assert [a.outcome for a in done.attempts] == ["oom", "oom", "oom", "failed"]
        assert "micro-batch 1 x accumulation 2" in done.attempts[0].reason
        assert "gradient checkpointing" in done.attempts[1].reason
        assert "99th percentile of their token lengths" in done.attempts[2].reason
        train = done.spec.train
        assert (train.micro_batch_size, train.gradient_checkpointing, train.seq_cap_percentile) == (
            1,
            True,
            99,
        )
        assert "even micro-batch 1 with gradient checkpointing and sequences capped" in done.error
        assert "4-bit base weights (QLoRA) were not tried: they need an NVIDIA GPU" in done.error
