"""Injected failures, so forged's self-healing can be exercised on a CPU (docs/runner-protocol.md).

FORGE_FAULTS holds a JSON list such as
  [{"kind": "oom", "step": 5, "while_micro_batch_over": 2}, {"kind": "nan", "step": 9, "while_lr_over": 5e-4}]
(`overflow` makes a gradient infinite after the backward pass, as an fp16 overflow does; `allocate` takes
`bytes_per_example` times the micro-batch of real memory for the step, as activations do, so under a
container's memory limit the kernel's OOM killer ends the runner exactly as a batch that does not fit would).
A fault fires
when the runner is about to compute optimizer step `step` and its condition holds, so a remediation that
lowers the micro-batch or the learning rate makes it go away, as it would in real life.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, TypeAdapter

from runner_image.errors import RunnerError

ENV = "FORGE_FAULTS"


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["oom", "nan", "overflow", "allocate"]
    step: int
    while_micro_batch_over: int = 0
    while_lr_over: float = 0.0
    bytes_per_example: int = 0


@cache
def configured() -> tuple[Fault, ...]:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return ()
    try:
        return tuple(TypeAdapter(list[Fault]).validate_python(json.loads(raw)))
    except ValueError as e:
        raise RunnerError("bad_spec", f"{ENV} is not a valid list of faults: {e}") from e


def _firing(kind: str, step: int, micro_batch_size: int, learning_rate: float) -> list[Fault]:
    return [
        f
        for f in configured()
        if f.kind == kind
        and f.step == step
        and micro_batch_size > f.while_micro_batch_over
        and learning_rate > f.while_lr_over
    ]


def _active(kind: str, step: int, micro_batch_size: int, learning_rate: float) -> bool:
    return bool(_firing(kind, step, micro_batch_size, learning_rate))


def maybe_oom(step: int, micro_batch_size: int, learning_rate: float) -> None:
    if _active("oom", step, micro_batch_size, learning_rate):
        raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} at step {step})")
    for fault in _firing("allocate", step, micro_batch_size, learning_rate):
        # torch.ones writes every page, so the memory is really taken, not just reserved.
        held = torch.ones(fault.bytes_per_example * micro_batch_size, dtype=torch.uint8)
        del held


def poison_loss(loss: torch.Tensor, step: int, micro_batch_size: int, learning_rate: float) -> torch.Tensor:
    return loss * float("nan") if _active("nan", step, micro_batch_size, learning_rate) else loss


def maybe_overflow(
    params: list[torch.nn.Parameter], step: int, micro_batch_size: int, learning_rate: float
) -> None:
    if _active("overflow", step, micro_batch_size, learning_rate):
        grad = next(p.grad for p in params if p.grad is not None)
        grad.view(-1)[0] = float("inf")
