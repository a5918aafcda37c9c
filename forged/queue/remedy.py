"""Self-healing: what to change before the next attempt of a job whose runner failed.

Each remedy resumes from the last checkpoint with settings that continue the same run (the runner's
checkpoint fingerprint leaves out the micro-batch split and the learning rate for this reason), and is
recorded as the attempt's outcome and reason so the user sees what happened and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Attempts that may end in a remedy before the job fails for good: bounded, so a broken job cannot loop. Room
# for the whole out-of-memory ladder plus one more rung of any kind.
MAX_REMEDIES = 6
REMEDIED_OUTCOMES = frozenset({"oom", "diverged", "crashed"})
MIN_LEARNING_RATE = 1e-7
SEQ_CAP_PERCENTILE = 99
NAN_CODES = frozenset({"nan_loss", "nan_loss_fp16"})  # the runner says which came under fp16
NOT_TRIED_4BIT = "4-bit base weights (QLoRA) were not tried"
NO_GPU_FOR_4BIT = "they need an NVIDIA GPU and this job has none"


def on_cpu() -> str:
    """What 4-bit training lacks for a job without GPUs; an executor's qlora_missing answers for one with."""
    return NO_GPU_FOR_4BIT


@dataclass(frozen=True)
class Remedy:
    outcome: str  # recorded on the failed attempt
    reason: str  # what happened and what the next attempt does differently
    train: dict[str, Any]  # the job's train spec for the next attempt


def _smaller_micro_batch(micro: int) -> int:
    """The largest proper divisor, so micro-batch x accumulation stays exactly the same."""
    for d in range(micro // 2, 0, -1):
        if micro % d == 0:
            return d
    return 1


def remedy_for(
    error_code: str,
    error: str,
    train: dict[str, Any],
    previous: list[str],
    qlora_missing: Callable[[], str] = on_cpu,
) -> Remedy | None:
    """`previous`: the outcomes of this job's earlier attempts that already ended in a remedy.
    `qlora_missing`: what 4-bit training lacks where the job runs ("" when nothing); asked only when the
    ladder reaches that rung, since finding out may start a container."""
    if len(previous) >= MAX_REMEDIES:
        return None
    if error_code == "oom":
        return _less_memory(error, train, previous.count("oom"), qlora_missing)
    if error_code in NAN_CODES:
        return _steadier(error, train, fp16=error_code == "nan_loss_fp16")
    if error_code == "crashed":  # killed by a signal, or died without a word: the same settings again
        return Remedy("crashed", f"{error}; resuming from the last checkpoint", dict(train))
    return None


def _steadier(error: str, train: dict[str, Any], fp16: bool) -> Remedy | None:
    """Half the learning rate; and off fp16 if the NaN came under it (its range is what overflowed)."""
    lr = float(train.get("learning_rate") or 0.0)
    lower = lr / 2
    leave_fp16 = fp16 and not train.get("no_fp16")
    if lower < MIN_LEARNING_RATE and not leave_fp16:
        return None
    changes: list[str] = []
    cured = dict(train)
    if lower >= MIN_LEARNING_RATE:
        cured["learning_rate"] = lower
        changes.append(f"learning rate {lower:g} (was {lr:g})")
    if leave_fp16:
        cured["no_fp16"] = True
        changes.append("bf16 instead of fp16 where the GPU supports it, fp32 where not")
    return Remedy(
        "diverged", f"{error}; resuming from the last good checkpoint with {' and '.join(changes)}", cured
    )


def _less_memory(
    error: str, train: dict[str, Any], earlier_ooms: int, qlora_missing: Callable[[], str]
) -> Remedy | None:
    """The ladder: a smaller micro-batch, gradient checkpointing, a sequence cap at the 99th percentile,
    4-bit base weights (where they can run; else the rung is skipped and the next says why), then smaller
    micro-batches down to 1."""
    micro = int(train.get("micro_batch_size") or 1)
    accum = int(train.get("grad_accum") or 1)
    if micro > 1 and earlier_ooms == 0:
        return _halve(error, train, micro, accum, "")
    if not train.get("gradient_checkpointing"):
        return Remedy(
            "oom",
            f"{error}; resuming from the last checkpoint with gradient checkpointing (activations are "
            "recomputed instead of kept: less memory, slower steps)",
            {**train, "gradient_checkpointing": True},
        )
    if not train.get("seq_cap_percentile"):
        return Remedy(
            "oom",
            f"{error}; resuming from the last checkpoint with training examples cut to the "
            f"{SEQ_CAP_PERCENTILE}th percentile of their token lengths (the runner logs how many it cut)",
            {**train, "seq_cap_percentile": SEQ_CAP_PERCENTILE},
        )
    skipped = ""
    if train.get("method") != "qlora":
        missing = qlora_missing()
        if not missing:
            return Remedy(
                "oom",
                f"{error}; resuming from the last checkpoint on 4-bit base weights (QLoRA): about a quarter "
                "of the weights' memory, the same LoRA adapter trained on top",
                {**train, "method": "qlora"},
            )
        skipped = f" ({NOT_TRIED_4BIT}: {missing})"
    if micro > 1:
        return _halve(error, train, micro, accum, skipped)
    return None


def _halve(error: str, train: dict[str, Any], micro: int, accum: int, note: str) -> Remedy:
    smaller = _smaller_micro_batch(micro)
    new_accum = accum * micro // smaller
    return Remedy(
        "oom",
        f"{error}; resuming from the last checkpoint with micro-batch {smaller} x accumulation "
        f"{new_accum} (was {micro} x {accum}, same effective batch {micro * accum}){note}",
        {**train, "micro_batch_size": smaller, "grad_accum": new_accum},
    )


def diagnosis(
    error_code: str, error: str, previous: list[str], qlora_missing: Callable[[], str] = on_cpu
) -> str:
    """The final word when no remedy is left. `qlora_missing`: as remedy_for's."""
    if len(previous) >= MAX_REMEDIES:
        return f"{error} (gave up after {len(previous)} automatic retries)"
    if error_code == "oom":
        missing = qlora_missing()
        tried = "micro-batch 1 with gradient checkpointing and sequences capped at the 99th percentile"
        if not missing:
            tried += " on 4-bit weights"
        note = f" ({NOT_TRIED_4BIT}: {missing})" if missing else ""
        return f"{error}; even {tried} does not fit{note}: use a smaller model or a shorter max_seq_len"
    if error_code in NAN_CODES:
        return f"{error}; the learning rate is already at its floor: check the data for broken examples"
    return error
