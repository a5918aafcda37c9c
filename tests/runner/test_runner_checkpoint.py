"""Checkpoint files on disk: only marked ones count, leftovers of a kill are cleaned, old ones pruned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerBase

from runner_image import checkpoint
from runner_image.precision import OptimizerStep, Precision
from runner_image.tiny import build_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _trainer(
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[PeftModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    model = get_peft_model(
        build_tiny_model(tokenizer),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def test_save_load_round_trip_and_pruning(tiny_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    model, optimizer, scheduler = _trainer(tiny_tokenizer)
    # fp16's loss scale after some overflows: a resumed run must not start over at the initial scale.
    scaling = _fp16_scaling(optimizer)
    scaling.scale(torch.ones(()))
    scaling.scaler.update(1024.0)
    scaling.skipped_in_a_row = 3
    ids = torch.tensor([[1, 2, 3, 4]])
    for step in range(1, 6):
        model(input_ids=ids).logits.float().pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        path = checkpoint.save(
            tmp_path, model, optimizer, scheduler, checkpoint.Position(step=step, batch=step), scaling
        )
        assert path == tmp_path / f"step-{step:06d}" and (path / checkpoint.MARKER).is_file()
    # Only the newest three survive.
    assert [s for s, _ in checkpoint.complete_checkpoints(tmp_path)] == [3, 4, 5]
    expected = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    rng_after_save = torch.get_rng_state()

    fresh, fresh_opt, fresh_sched = _trainer(tiny_tokenizer)
    torch.manual_seed(123)  # the restored RNG state must win over whatever the process did before
    fresh_scaling = _fp16_scaling(fresh_opt)
    position = checkpoint.load(
        tmp_path / "step-000005", fresh, fresh_opt, fresh_sched, torch.device("cpu"), fresh_scaling
    )
    assert position.step == 5 and position.batch == 5
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    for name, param in fresh.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, expected[name]), name
    assert fresh_sched.last_epoch == 5
    assert fresh_opt.state_dict()["state"][0]["step"] == 5
    assert fresh_scaling.scaler is not None and fresh_scaling.scaler.get_scale() == 1024.0
    assert fresh_scaling.skipped_in_a_row == 3


def _fp16_scaling(optimizer: torch.optim.Optimizer) -> OptimizerStep:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return OptimizerStep(Precision(torch.device("cpu"), torch.float16), optimizer, params, max_grad_norm=1.0)


def test_incomplete_checkpoints_are_ignored_and_removed(tmp_path: Path) -> None:
    (tmp_path / "step-000010").mkdir()
    (tmp_path / "step-000010" / checkpoint.MARKER).write_text("10\n")
    (tmp_path / "step-000020").mkdir()  # renamed but killed before the marker was written
    (tmp_path / "step-000030.tmp").mkdir()  # killed mid-write
    (tmp_path / "unrelated").mkdir()
    assert checkpoint.latest(tmp_path) == tmp_path / "step-000010"
    assert sorted(checkpoint.remove_incomplete(tmp_path)) == ["step-000020", "step-000030.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000010", "unrelated"]
    assert checkpoint.latest(tmp_path / "missing") is None
