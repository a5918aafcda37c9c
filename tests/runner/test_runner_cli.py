"""`python -m runner_image` as forged runs it: a real subprocess, events on stdout, exit codes, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from runner_testlib import (
    BASE_HPARAMS,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    RunResult,
    adapter_weights,
    check_event_shape,
    parse_stdout,
    run_runner,
    runner_cmd,
    runner_env,
    write_spec,
)
from safetensors.torch import load_file, save_file

from runner_image.errors import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_PREEMPTED
from runner_image.tiny import save_tiny

try:
    from forge.v1 import jobs_pb2
    from google.protobuf import json_format
except ImportError:  # the runner must not need the protos; the tests use them only as an extra check
    jobs_pb2 = None


def _run_until(spec: Path, workspace: Path, stop_when: Any, sig: signal.Signals) -> RunResult:
    """Start the runner, send `sig` once an event satisfies `stop_when`, and collect everything."""
    proc = subprocess.Popen(
        runner_cmd("run", "--spec", str(spec)),
        cwd=workspace,
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    sent = False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and line.startswith("{") and stop_when(json.loads(line)):
                proc.send_signal(sig)
                sent = True
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent, "the run ended before the signal could be sent"
    events, other = parse_stdout("".join(lines))
    return RunResult(rc, events, proc.stderr.read(), other)


def _assert_same_adapter(a: Path, b: Path) -> None:
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 0
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6, rtol=0), name


def test_events_are_json_lines_of_the_documented_shapes(reference_run: tuple[Path, RunResult]) -> None:
    _workspace, run = reference_run
    assert run.rc == 0, run.stderr
    assert run.other_lines == []  # every stdout line is an event
    for event in run.events:
        check_event_shape(event)
        if jobs_pb2 is not None:
            json_format.ParseDict(event, jobs_pb2.JobEvent())  # exactly how forged reads a line


def test_event_sequence(reference_run: tuple[Path, RunResult]) -> None:
    workspace, run = reference_run
    warnings = [e["message"] for e in run.of("log") if e["level"] == "warning"]
    assert any("pipeline check" in w and "random weights" in w for w in warnings)

    steps = run.of("step")
    assert [s["step"] for s in steps] == list(range(1, TOTAL_STEPS + 1))
    assert {s["total_steps"] for s in steps} == {TOTAL_STEPS}
    assert steps[-1]["eta_seconds"] == 0 and steps[-1]["epoch"] == pytest.approx(BASE_HPARAMS["epochs"])
    assert steps[STEPS_PER_EPOCH - 1]["epoch"] == pytest.approx(1.0)
    assert all(s["tokens_per_second"] > 0 and s["grad_norm"] > 0 and s["learning_rate"] > 0 for s in steps)
    # Warmup: the learning rate rises first, then decays.
    peak = max(range(len(steps)), key=lambda i: steps[i]["learning_rate"])
    assert 0 < peak < len(steps) - 1

    # Baseline eval before the first step, then every eval_every steps, and at the end.
    assert [e["step"] for e in run.of("eval")] == [0, 10, 20, 30]
    kinds = [next(iter(e)) for e in run.events]
    assert kinds.index("eval") < kinds.index("step")
    assert [c["step"] for c in run.of("checkpoint")] == [5, 10, 15, 20, 25, 30]
    assert kinds[-1] == "artifact"
    assert run.of("artifact") == [
        {"name": "tensorboard", "path": str(workspace / "output" / "tensorboard")},
        {"name": "adapter", "path": str(workspace / "output" / "adapter")},
    ]
    assert run.of("error") == []


def test_adapter_metrics_and_falling_loss(reference_run: tuple[Path, RunResult]) -> None:
    workspace, run = reference_run
    adapter = workspace / "output" / "adapter"
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (adapter / name).is_file(), name
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }

    metrics = json.loads((workspace / "output" / "metrics.json").read_text())
    steps, evals = run.of("step"), run.of("eval")
    assert metrics["steps"] == TOTAL_STEPS
    assert metrics["first_loss"] == steps[0]["loss"] and metrics["final_loss"] == steps[-1]["loss"]
    assert (
        metrics["first_val_loss"] == evals[0]["val_loss"]
        and metrics["final_val_loss"] == evals[-1]["val_loss"]
    )
    # The tiny model learns the fixture: the loss falls clearly, on train and on held-out data.
    first_epoch = sum(s["loss"] for s in steps[:STEPS_PER_EPOCH]) / STEPS_PER_EPOCH
    last_epoch = sum(s["loss"] for s in steps[-STEPS_PER_EPOCH:]) / STEPS_PER_EPOCH
    assert last_epoch < first_epoch - 3.0, (first_epoch, last_epoch)
    assert metrics["final_val_loss"] < metrics["first_val_loss"] - 2.0
    # Only the newest checkpoints are kept.
    kept = sorted(p.name for p in (workspace / "checkpoints").iterdir())
    assert kept == ["step-000020", "step-000025", "step-000030"]


def test_sigterm_checkpoints_exits_75_and_resumes_exactly(
    reference_run: tuple[Path, RunResult], tmp_path: Path
) -> None:
    reference, _ = reference_run
    spec = write_spec(tmp_path)
    first = _run_until(spec, tmp_path, lambda e: e.get("step", {}).get("step") == 7, signal.SIGTERM)
    assert first.rc == EXIT_PREEMPTED, first.stderr
    last_step = first.of("step")[-1]["step"]
    assert 7 <= last_step < TOTAL_STEPS
    # The stop checkpoint is at the step where training stopped, and it is complete.
    assert first.of("checkpoint")[-1]["step"] == last_step
    stopped_at = tmp_path / "checkpoints" / f"step-{last_step:06d}"
    assert (stopped_at / "COMPLETE").is_file()
    assert not (tmp_path / "output" / "adapter").exists()

    second = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert second.rc == 0, second.stderr
    assert f"resumed from checkpoint step {last_step}" in [e["message"] for e in second.of("log")]
    assert [s["step"] for s in second.of("step")] == list(range(last_step + 1, TOTAL_STEPS + 1))
    _assert_same_adapter(reference, tmp_path)


def test_sigkill_resumes_from_the_last_periodic_checkpoint_exactly(
    reference_run: tuple[Path, RunResult], tmp_path: Path
) -> None:
    reference, _ = reference_run
    spec = write_spec(tmp_path)
    first = _run_until(spec, tmp_path, lambda e: e.get("step", {}).get("step") == 12, signal.SIGKILL)
    assert first.rc == -signal.SIGKILL
    saved = [c["step"] for c in first.of("checkpoint")]
    assert saved and saved[-1] >= 10

    second = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert second.rc == 0, second.stderr
    resumed = [e["message"] for e in second.of("log") if e["message"].startswith("resumed from checkpoint")]
    assert resumed == [f"resumed from checkpoint step {saved[-1]}"]
    assert second.of("step")[0]["step"] == saved[-1] + 1
    _assert_same_adapter(reference, tmp_path)


def test_broken_stdout_does_not_stop_training(tmp_path: Path) -> None:
    """If forged dies, the pipe breaks; the runner keeps going (its checkpoints are what the retry needs)."""
    spec = write_spec(tmp_path, epochs=2, checkpoint_every=2)
    proc = subprocess.Popen(
        runner_cmd("run", "--spec", str(spec)),
        cwd=tmp_path,
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"step"' in line:
            break
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert (tmp_path / "output" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "step-000006" / "COMPLETE").is_file()


def test_all_masked_data_exits_2_with_an_error_event(tmp_path: Path) -> None:
    data = tmp_path / "no_assistant.jsonl"
    data.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) + "\n" for i in range(5))
    )
    run = run_runner("run", "--spec", str(write_spec(tmp_path, train_file=data)), cwd=tmp_path)
    assert run.rc == EXIT_BAD_INPUT
    (error,) = run.of("error")
    assert error["code"] == "no_trainable_examples" and "assistant" in error["message"]
    for event in run.events:
        check_event_shape(event)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{this is not json", "not valid JSON"),
        (json.dumps({"job_id": "j", "model": {"kind": "tiny"}}), "train_file"),
    ],
)
def test_malformed_spec_exits_2_with_an_error_event(tmp_path: Path, content: str, needle: str) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(content)
    run = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert run.rc == EXIT_BAD_INPUT
    (error,) = run.of("error")
    assert error["code"] == "bad_spec" and needle in error["message"]
    assert run.other_lines == []


def test_build_tiny_then_train_from_the_directory(
    reference_run: tuple[Path, RunResult], tmp_path: Path
) -> None:
    """build-tiny writes an ordinary HF directory that loads as kind=path and holds the same weights."""
    _, reference = reference_run
    out = tmp_path / "tiny-model"
    built = run_runner("build-tiny", "--out", str(out), cwd=tmp_path)
    assert built.rc == 0, built.stderr
    assert built.of("artifact") == [{"name": "tiny", "path": str(out)}]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name

    spec = write_spec(tmp_path / "job", model={"kind": "path", "path": str(out)}, max_steps=2)
    run = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert run.rc == 0, run.stderr
    assert not any("pipeline check" in e["message"] for e in run.of("log"))
    # Same base weights, data and seed: the baseline validation loss matches the built-in tiny model's.
    assert run.of("eval")[0]["val_loss"] == pytest.approx(reference.of("eval")[0]["val_loss"], abs=1e-4)
    assert [s["step"] for s in run.of("step")] == [1, 2]
    assert (tmp_path / "job" / "output" / "adapter" / "adapter_model.safetensors").is_file()


def test_nan_loss_exits_1_with_an_error_naming_the_step(tmp_path: Path) -> None:
    """A base model with a non-finite weight (a broken download, say) makes the very first loss NaN."""
    model_dir = save_tiny(tmp_path / "broken-model")
    weights = load_file(str(model_dir / "model.safetensors"))
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})

    spec = write_spec(tmp_path / "job", model={"kind": "path", "path": str(model_dir)}, val_file=None)
    run = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert run.rc == EXIT_CRASH
    (error,) = run.of("error")
    assert error["code"] == "nan_loss" and "step 1" in error["message"] and error["hint"]
    assert run.of("step") == []
    for event in run.events:
        check_event_shape(event)


_PARENT = """
import os, subprocess, sys
log = open(sys.argv[1], "w")
env = dict(os.environ, FORGE_PARENT_PID=str(os.getpid()))
child = subprocess.Popen(sys.argv[2:], env=env, stdout=log, stderr=subprocess.STDOUT)
print(child.pid, flush=True)
child.wait()
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited; whoever adopted it may not reap it promptly


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux (PR_SET_PDEATHSIG)")
def test_parent_death_means_checkpoint_and_exit(tmp_path: Path) -> None:
    """forged sets FORGE_PARENT_PID; if forged dies, the runner gets SIGTERM, checkpoints and stops."""
    spec = write_spec(tmp_path)
    log = tmp_path / "runner.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(log), *runner_cmd("run", "--spec", str(spec))],
        cwd=tmp_path,
        env=runner_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    runner_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while '"step": {"step": 3,' not in log.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.02)
    parent.kill()
    parent.wait()
    while not _gone(runner_pid):
        assert time.monotonic() < deadline, "the runner outlived its parent"
        time.sleep(0.05)
    events, _ = parse_stdout(log.read_text())
    messages = [e["log"]["message"] for e in events if "log" in e]
    assert len([m for m in messages if "stopped by SIGTERM" in m]) == 1
    last = [e["checkpoint"]["step"] for e in events if "checkpoint" in e][-1]
    assert (tmp_path / "checkpoints" / f"step-{last:06d}" / "COMPLETE").is_file()
    # No adapter: the run did not finish (only the TensorBoard directory is reported, at the start).
    assert not any(e["artifact"]["name"] == "adapter" for e in events if "artifact" in e)
