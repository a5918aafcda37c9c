"""Precision: fp16 with loss scaling (GPUs older than Ampere) trains, skips overflows, and fails only on
repeated ones; FORGE_PRECISION lets this CPU run the fp16 path, and the run's curves land in TensorBoard."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from runner_testlib import adapter_weights, parse_stdout, runner_cmd, runner_env, write_spec
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner_image import precision
from runner_image.errors import EXIT_BAD_INPUT, EXIT_CRASH, RunnerError
from runner_image.precision import MAX_SKIPPED_IN_A_ROW, OptimizerStep, Precision, pick_device

FP16_CPU = Precision(torch.device("cpu"), torch.float16)


def test_fp16_on_a_cpu_trains_skips_an_overflow_and_logs_to_tensorboard(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        max_steps=4,
        micro_batch_size=2,
        grad_accum=1,
        checkpoint_every=0,
        eval_every=0,
        lora_dropout=0.0,
    )
    env = {
        **runner_env(),
        precision.ENV: "fp16",
        "FORGE_FAULTS": json.dumps([{"kind": "overflow", "step": 3}]),
    }
    proc = subprocess.run(
        runner_cmd("run", "--spec", str(spec)),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    events, _ = parse_stdout(proc.stdout)
    logs = [e["log"]["message"] for e in events if "log" in e]
    assert logs[0].startswith("device cpu, fp16 autocast with dynamic loss scaling, fp32 LoRA weights, lora")
    assert "unsloth is not installed: training with transformers + PEFT" in logs
    assert any(m.startswith("fp16 overflow at step 3: ") and "step skipped" in m for m in logs), logs
    assert not [e for e in events if "error" in e]
    assert "lr_scheduler" not in proc.stderr  # skipping a step on purpose is not worth a warning

    steps = {e["step"]["step"]: e["step"] for e in events if "step" in e}
    assert sorted(steps) == [1, 2, 3, 4]
    # Protobuf's JSON for a non-finite norm; the skipped step still counts.
    assert steps[3]["grad_norm"] in ("Infinity", "NaN")
    evals = {e["eval"]["step"]: e["eval"]["val_loss"] for e in events if "eval" in e}
    assert evals[4] < evals[0], "fp16 training lowered the validation loss"
    # The master weights: fp16 only in the forward pass, the adapter is trained and saved in fp32.
    weights = adapter_weights(tmp_path)
    assert {w.dtype for w in weights.values()} == {torch.float32}

    artifacts = {e["artifact"]["name"]: e["artifact"]["path"] for e in events if "artifact" in e}
    assert artifacts["tensorboard"] == str(tmp_path / "output" / "tensorboard")
    board = EventAccumulator(artifacts["tensorboard"])
    board.Reload()
    scalars = {tag: {s.step: s.value for s in board.Scalars(tag)} for tag in board.Tags()["scalars"]}
    assert scalars["train/loss"] == pytest.approx({n: s["loss"] for n, s in steps.items()})
    assert scalars["train/learning_rate"] == pytest.approx({n: s["learning_rate"] for n, s in steps.items()})
    assert sorted(scalars["train/tokens_per_second"]) == [1, 2, 3, 4]
    assert 3 not in scalars["train/grad_norm"]  # an infinite norm is not plotted
    assert scalars["eval/val_loss"] == pytest.approx(evals)


def _linear_step(prec: Precision) -> tuple[torch.nn.Linear, OptimizerStep]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    params = list(layer.parameters())
    return layer, OptimizerStep(prec, torch.optim.SGD(params, lr=0.1), params, max_grad_norm=1.0)


def _backward(layer: torch.nn.Linear, stepper: OptimizerStep, overflow: bool) -> None:
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = layer(torch.ones(2, 4)).float().pow(2).mean() * 1e-3
    stepper.scale(loss).backward()
    if overflow:
        layer.weight.grad.view(-1)[0] = float("inf")


def test_an_overflow_skips_the_step_and_halves_the_scale_until_too_many_in_a_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    layer, stepper = _linear_step(FP16_CPU)
    assert stepper.scaler is not None
    _backward(layer, stepper, overflow=False)
    assert math.isfinite(stepper.step(1))
    before = layer.weight.detach().clone()
    scale = stepper.scaler.get_scale()
    for step in range(2, 2 + MAX_SKIPPED_IN_A_ROW - 1):
        _backward(layer, stepper, overflow=True)
        assert not math.isfinite(stepper.step(step))
    assert torch.equal(layer.weight, before), "no skipped step touched the weights"
    assert stepper.scaler.get_scale() == scale / 2 ** (MAX_SKIPPED_IN_A_ROW - 1)
    assert capsys.readouterr().out.count("fp16 overflow at step") == MAX_SKIPPED_IN_A_ROW - 1

    # The count survives a checkpoint, and one good step resets it.
    _, resumed = _linear_step(FP16_CPU)
    resumed.load_state_dict(stepper.state_dict())
    assert resumed.skipped_in_a_row == MAX_SKIPPED_IN_A_ROW - 1
    assert resumed.scaler is not None and resumed.scaler.get_scale() == stepper.scaler.get_scale()
    _backward(layer, stepper, overflow=True)
    with pytest.raises(RunnerError) as info:
        stepper.step(20)
    # Under fp16, so forged's remedy can take the job off fp16 as well as lowering the learning rate.
    assert info.value.code == "nan_loss_fp16" and info.value.exit_code == EXIT_CRASH
    assert f"{MAX_SKIPPED_IN_A_ROW} overflows in a row" in info.value.message


def test_without_loss_scaling_a_non_finite_gradient_is_nan_loss_at_once() -> None:
    layer, stepper = _linear_step(Precision(torch.device("cpu"), None))
    assert stepper.scaler is None
    _backward(layer, stepper, overflow=True)
    with pytest.raises(RunnerError) as info:
        stepper.step(7)
    assert info.value.code == "nan_loss" and "step 7" in info.value.message


def test_precision_is_fp32_on_a_cpu_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ENV, raising=False)
    assert pick_device() == Precision(torch.device("cpu"), None)
    monkeypatch.setenv(precision.ENV, "BF16")
    assert pick_device().amp_dtype == torch.bfloat16 and not pick_device().scaled
    monkeypatch.setenv(precision.ENV, "fp8")
    with pytest.raises(RunnerError) as info:
        pick_device()
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert info.value.message == "FORGE_PRECISION='fp8' is not a precision: use bf16, fp16 or fp32"


def test_no_fp16_trains_in_fp32_where_fp16_would_be_used(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # forged's remedy after a NaN under fp16; this CPU has no bf16-capable GPU, so fp32.
    monkeypatch.setenv(precision.ENV, "fp16")
    assert pick_device().scaled
    assert pick_device(no_fp16=True) == Precision(torch.device("cpu"), None)
    assert "fp16 is off for this job" in capsys.readouterr().out
    monkeypatch.setenv(precision.ENV, "bf16")
    assert pick_device(no_fp16=True).amp_dtype == torch.bfloat16, "only fp16 is avoided"
