"""Self-healing through a real forged: injected OOM and NaN, each fixed and recorded as an attempt."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from forge.v1 import jobs_pb2 as S
from google.protobuf import json_format
from harness import EXAMPLE_CSV, TERMINAL, forge_env, running_forged

from forged.brain.planner import estimate_memory
from forged.queue.placement import gib


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


def test_a_job_that_cannot_be_healed_fails_with_a_diagnosis_and_each_rung_shrinks_its_reservation(
    tmp_path: Path,
) -> None:
    """On a (fake) GPU whose runner cannot train in 4 bits (bitsandbytes is not in this venv, and the GPU is
    only NVML's), and with a model whose shape the planner knows, so the job has a memory estimate."""
    from runner_image.tiny import save_tiny

    model = save_tiny(tmp_path / "tiny-smollm", "smollm")
    env = forge_env(FORGE_FAULTS=json.dumps([{"kind": "oom", "step": 1}]), FORGE_FAKE_GPUS='[{"index": 0}]')
    with running_forged(tmp_path / "state", env=env) as forged:
        spec = forged.train_spec(EXAMPLE_CSV, max_steps=4, micro_batch_size=2, grad_accum=1, model=str(model))
        job = forged.submit(spec)
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL)
        logs = [e.log.message for e in forged.events(job.id) if e.WhichOneof("payload") == "log"]

    assert done.state == S.JOB_STATE_FAILED
    # The ladder: a smaller micro-batch, gradient checkpointing, a sequence cap; 4-bit cannot run where the
    # runner runs, so that rung is skipped, and then nothing is left.
    assert [a.outcome for a in done.attempts] == ["oom", "oom", "oom", "failed"]
    assert "micro-batch 1 x accumulation 2" in done.attempts[0].reason
    assert "gradient checkpointing" in done.attempts[1].reason
    assert "99th percentile of their token lengths" in done.attempts[2].reason
    train = done.spec.train
    assert (train.micro_batch_size, train.gradient_checkpointing, train.seq_cap_percentile) == (1, True, 99)
    assert train.method != "qlora"
    assert "even micro-batch 1 with gradient checkpointing and sequences capped" in done.error
    skipped = re.search(
        r"4-bit base weights \(QLoRA\) were not tried: (.*) where the runner runs", done.error
    )
    assert skipped is not None and skipped.group(1) in ("bitsandbytes is not installed", "no NVIDIA GPU")
    assert f"the runner's Python, {sys.executable}" in done.error

    # The smaller micro-batch and checkpointing each shrank the GPU memory the job reserves, by the planner's
    # estimate at the new settings; the sequence cap, whose length only the runner knows, did not.
    healed = json_format.MessageToDict(train, preserving_proto_field_name=True)
    submitted = job.spec.memory_bytes  # filled in at submit by the same estimate
    assert 0 < done.spec.memory_bytes == estimate_memory(healed) < submitted
    smaller_batch = estimate_memory({**healed, "gradient_checkpointing": False})
    assert done.spec.memory_bytes < smaller_batch < submitted
    shrank = [m for m in logs if m.startswith("GPU memory reserved for the next attempt: ")]
    assert shrank == [
        f"GPU memory reserved for the next attempt: {gib(smaller_batch)} (was {gib(submitted)})",
        f"GPU memory reserved for the next attempt: {gib(done.spec.memory_bytes)} (was {gib(smaller_batch)})",
    ]
