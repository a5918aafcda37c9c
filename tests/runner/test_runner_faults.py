"""Failures forged heals: the runner reports them by code, and continues a checkpoint under new settings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from runner_testlib import (
    BASE_HPARAMS,
    TOTAL_STEPS,
    RunResult,
    parse_stdout,
    runner_cmd,
    runner_env,
    write_spec,
)

from runner_image.errors import EXIT_CRASH

# No dropout: dropout masks depend on how examples fall into micro-batches, the optimisation does not.
HPARAMS = {**BASE_HPARAMS, "lora_dropout": 0.0}


def run_with_faults(spec: Path, cwd: Path, faults: list[dict] | None = None) -> RunResult:  # type: ignore[type-arg]
    env = runner_env()
    env.pop("FORGE_FAULTS", None)
    if faults:
        env["FORGE_FAULTS"] = json.dumps(faults)
    proc = subprocess.run(
        runner_cmd("run", "--spec", str(spec)), cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    events, other = parse_stdout(proc.stdout)
    return RunResult(proc.returncode, events, proc.stderr, other)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    workspace = tmp_path_factory.mktemp("reference")
    done = run_with_faults(write_spec(workspace, **HPARAMS), workspace)
    assert done.rc == 0, done.stderr
    return done


def losses(run: RunResult) -> dict[int, float]:
    return {s["step"]: s["loss"] for s in run.of("step")}


def test_oom_is_reported_as_oom_and_a_smaller_micro_batch_continues_the_same_run(
    reference: RunResult, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, **HPARAMS)  # micro-batch 5 x accumulation 2
    first = run_with_faults(spec, tmp_path, [{"kind": "oom", "step": 7, "while_micro_batch_over": 1}])
    assert first.rc == EXIT_CRASH
    error = first.of("error")[-1]
    assert error["code"] == "oom" and "step 7" in error["message"] and "micro-batch 5" in error["message"]
    assert first.of("checkpoint")[-1]["step"] == 5

    # What forged's remedy does: the largest proper divisor of 5 is 1, so 1 x 10, the same effective batch.
    write_spec(tmp_path, **{**HPARAMS, "micro_batch_size": 1, "grad_accum": 10})
    second = run_with_faults(spec, tmp_path, [{"kind": "oom", "step": 7, "while_micro_batch_over": 1}])
    assert second.rc == 0, second.stderr
    messages = [e["message"] for e in second.of("log")]
    assert "resumed from checkpoint step 5" in messages
    assert any(m.startswith("continuing with micro-batch 1 x accumulation 10") for m in messages)
    resumed = losses(second)
    assert sorted(resumed) == list(range(6, TOTAL_STEPS + 1))
    # The same examples in the same windows: the losses are the reference run's, to float precision.
    expected = losses(reference)
    for step, loss in resumed.items():
        assert loss == pytest.approx(expected[step], rel=1e-3), step


def test_nan_is_reported_and_a_lower_learning_rate_continues_from_the_last_good_checkpoint(
    reference: RunResult, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, **HPARAMS)
    fault = [{"kind": "nan", "step": 8, "while_lr_over": 6e-4}]
    first = run_with_faults(spec, tmp_path, fault)
    assert first.rc == EXIT_CRASH
    assert first.of("error")[-1]["code"] == "nan_loss"
    assert first.of("checkpoint")[-1]["step"] == 5

    write_spec(tmp_path, **{**HPARAMS, "learning_rate": 5e-4})
    second = run_with_faults(spec, tmp_path, fault)
    assert second.rc == 0, second.stderr
    assert "continuing with learning rate 0.0005 (was 0.001)" in [e["message"] for e in second.of("log")]
    steps = {s["step"]: s["learning_rate"] for s in second.of("step")}
    reference_lr = {s["step"]: s["learning_rate"] for s in reference.of("step")}
    # The schedule keeps its shape (warmup, cosine) at half the height.
    for step in (6, 8, 20):
        assert steps[step] == pytest.approx(reference_lr[step] / 2, rel=1e-6)


def test_a_malformed_fault_list_is_bad_input(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, **HPARAMS)
    env = {**runner_env(), "FORGE_FAULTS": '[{"kind": "meteor"}]'}
    proc = subprocess.run(
        runner_cmd("run", "--spec", str(spec)), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "FORGE_FAULTS" in proc.stdout
    assert not os.path.exists(tmp_path / "output" / "adapter")


def test_the_preflight_step_tries_the_longest_batch_before_any_training(
    reference: RunResult, tmp_path: Path
) -> None:
    assert any(e["message"].startswith("pre-flight: the longest micro-batch") for e in reference.of("log"))

    spec = write_spec(tmp_path, **HPARAMS)
    done = run_with_faults(spec, tmp_path, [{"kind": "oom", "step": 0, "while_micro_batch_over": 1}])
    assert done.rc == EXIT_CRASH
    error = done.of("error")[-1]
    assert error["code"] == "oom" and "pre-flight" in error["message"]
    assert done.of("step") == [] and done.of("checkpoint") == [], "it failed before any work was spent"


def test_gradient_checkpointing_trains_the_same_run(reference: RunResult, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, **{**HPARAMS, "gradient_checkpointing": True})
    done = run_with_faults(spec, tmp_path)
    assert done.rc == 0, done.stderr
    assert any("gradient checkpointing on" in e["message"] for e in done.of("log"))
    expected = losses(reference)
    for step, loss in losses(done).items():
        assert loss == pytest.approx(expected[step], rel=1e-3), step
