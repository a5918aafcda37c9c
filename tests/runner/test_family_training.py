"""Every tiny family trains on real data: validation loss falls, and a run stopped mid-epoch resumes exactly.

The runner runs in this process (`runner_image.train.run` with stdout captured), not as `python -m
runner_image`: three runs per family as subprocesses would spend most of their time importing torch and
transformers. The subprocess path (signals, exit codes, the event pipe) is tested on `tiny` in
test_runner_cli.py; what differs per family is the model, so that is what this file varies.

Running in-process is only sound if a run depends on nothing a previous run left behind. `run` seeds torch
and `random` itself and a checkpoint restores their states, and the tiny models are built under a forked RNG;
the exact-resume assertion below is what proves nothing else leaks. Each run is wrapped so that the tests
after these do not inherit the runner's RNG state either.

Data: tests/fixtures/spider_sql (real questions and SQL from the Spider dev set; see its README).
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from runner_testlib import RunResult, adapter_weights, check_event_shape, parse_stdout, write_spec

from runner_image.errors import EXIT_OK, EXIT_PREEMPTED
from runner_image.signals import StopFlag
from runner_image.spec import load_spec
from runner_image.tiny import FAMILIES
from runner_image.train import run

SPIDER = Path(__file__).resolve().parents[1] / "fixtures" / "spider_sql"

# 34 training rows in micro-batches of 2 (each one packed row), two per optimizer step: 9 steps per epoch,
# the last one a short accumulation window. STEPS stays inside the first epoch, so the stop after
# STOP_AFTER is mid-epoch. The learning rate is high because random weights need large LoRA updates to move
# in four steps (at 5e-3, tiny-gemma's validation loss fell only 0.7 nats in six steps of twice this
# batch). Dropout is on so that the resumed run needs the checkpoint's RNG state to match.
# checkpoint_every 0: the only checkpoint is the one the stop writes, so the resume is from exactly that.
STEPS = 4
STOP_AFTER = 2
HPARAMS: dict[str, Any] = {
    "max_steps": STEPS,
    "epochs": 1,
    "micro_batch_size": 2,
    "grad_accum": 2,
    "learning_rate": 1e-2,
    "lora_dropout": 0.05,
    "max_seq_len": 256,
    "checkpoint_every": 0,
    "eval_every": 0,
    "warmup_ratio": 0.0,
}
# Measured on these settings: the validation loss (on databases the training rows never mention) fell by
# 1.4 (gemma, gemma2) to 3.2 nats (smollm). A random-weight model can only be learning the answers' format
# here (SQL keywords, the `count(*)` idiom, the end-of-turn token), which is all this asserts. The runs are
# seeded, so the margin is not for noise but for other torch/transformers versions: 1 nat (perplexity
# divided by e) leaves 0.4 below the smallest drop, yet an adapter that learned nothing fails by a mile.
MIN_VAL_LOSS_DROP = 1.0


class StopAfterStep(StopFlag):
    """SIGTERM arriving right after step `after` is reported, as forged would send it: `run` reads
    `requested` at every step boundary, exactly as it reads the flag the signal handler sets."""

    def __init__(self, stdout: io.StringIO, after: int) -> None:
        self._stdout, self._after = stdout, after
        super().__init__()

    @property  # type: ignore[override]
    def requested(self) -> bool:
        steps = sum(1 for line in self._stdout.getvalue().splitlines() if line.startswith('{"step"'))
        return self._signalled or steps >= self._after

    @requested.setter
    def requested(self, value: bool) -> None:
        self._signalled = value


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(state)


def _spec(workspace: Path, family: str) -> Path:
    return write_spec(
        workspace,
        train_file=SPIDER / "train.jsonl",
        val_file=SPIDER / "val.jsonl",
        model={"kind": "tiny", "family": family},
        **HPARAMS,
    )


def _train(spec: Path, stdout: io.StringIO, stop: StopFlag) -> RunResult:
    with _rng_untouched(), contextlib.redirect_stdout(stdout):
        rc = run(load_spec(spec), stop)
    events, other = parse_stdout(stdout.getvalue())
    for event in events:
        check_event_shape(event)
    return RunResult(rc, events, stderr="", other_lines=other)


@pytest.fixture(scope="module", params=FAMILIES)
def uninterrupted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, RunResult]:
    """One family's run from start to finish: the loss test reads it, the resume test compares with it."""
    family: str = request.param
    workspace = tmp_path_factory.mktemp(f"uninterrupted-{family}")
    result = _train(_spec(workspace, family), io.StringIO(), StopFlag())
    assert result.rc == EXIT_OK, result.events[-3:]
    return family, workspace, result


def test_validation_loss_falls_on_real_data(uninterrupted: tuple[str, Path, RunResult]) -> None:
    family, _, result = uninterrupted
    evals = result.of("eval")
    assert [e["step"] for e in evals] == [0, STEPS]
    first, final = evals[0]["val_loss"], evals[-1]["val_loss"]
    assert final < first - MIN_VAL_LOSS_DROP, (family, first, final)
    # The training loss falls too (compared per step, as a user watching the run sees it).
    losses = [s["loss"] for s in result.of("step")]
    assert losses[-1] < losses[0], (family, losses)


def test_run_stopped_mid_epoch_resumes_to_the_same_weights(
    uninterrupted: tuple[str, Path, RunResult], tmp_path: Path
) -> None:
    family, reference_dir, reference = uninterrupted
    spec = _spec(tmp_path, family)

    stdout = io.StringIO()
    stopped = _train(spec, stdout, StopAfterStep(stdout, STOP_AFTER))
    assert stopped.rc == EXIT_PREEMPTED
    assert [s["step"] for s in stopped.of("step")] == list(range(1, STOP_AFTER + 1))
    assert stopped.of("step")[-1]["epoch"] < 1.0  # mid-epoch, not at a boundary
    assert [c["step"] for c in stopped.of("checkpoint")] == [STOP_AFTER]
    # No adapter yet (the only artifact reported is the TensorBoard directory, at the start).
    assert [a["name"] for a in stopped.of("artifact")] == ["tensorboard"]
    assert not (tmp_path / "output" / "adapter").exists()

    resumed = _train(spec, io.StringIO(), StopFlag())
    assert resumed.rc == EXIT_OK, resumed.events[-3:]
    assert f"resumed from checkpoint step {STOP_AFTER}" in [e["message"] for e in resumed.of("log")]
    resumed_steps = resumed.of("step")
    assert [s["step"] for s in resumed_steps] == list(range(STOP_AFTER + 1, STEPS + 1))
    # The steps after the stop see the same data and dropout masks as in the uninterrupted run.
    expected_losses = [s["loss"] for s in reference.of("step")[STOP_AFTER:]]
    assert [s["loss"] for s in resumed_steps] == pytest.approx(expected_losses, rel=1e-5)
    assert resumed.of("eval")[-1]["val_loss"] == pytest.approx(reference.of("eval")[-1]["val_loss"], rel=1e-5)

    expected, actual = adapter_weights(reference_dir), adapter_weights(tmp_path)
    assert set(actual) == set(expected)
    # LoRA's B matrices start at zero: equal weights mean something only if training moved them.
    assert all(expected[name].abs().max() > 0 for name in expected if "lora_B" in name)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-7, msg=f"{family}: {name}")
