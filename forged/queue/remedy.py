"""Self-healing: what to change before the next attempt of a job whose runner failed.

Each remedy resumes from the last checkpoint with settings that continue the same run (the runner's
checkpoint fingerprint leaves out the micro-batch split and the learning rate for this reason), and is
recorded as the attempt's outcome and reason so the user sees what happened and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Attempts that may end in a remedy before the job fails for good: bounded, so a broken job cannot loop.
MAX_REMEDIES = 4
REMEDIED_OUTCOMES = frozenset({"oom", "diverged", "crashed"})
MIN_LEARNING_RATE = 1e-7


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


def remedy_for(error_code: str, error: str, train: dict[str, Any], previous: list[str]) -> Remedy | None:
    """`previous`: the outcomes of this job's earlier attempts that already ended in a remedy."""
    if len(previous) >= MAX_REMEDIES:
        return None
    if error_code == "oom":
        return _less_memory(error, train, previous.count("oom"))
    if error_code == "nan_loss":
        lr = float(train.get("learning_rate") or 0.0)
        lower = lr / 2
        if lower < MIN_LEARNING_RATE:
            return None
        return Remedy(
            "diverged",
            f"{error}; resuming from the last good checkpoint with learning rate {lower:g} (was {lr:g})",
            {**train, "learning_rate": lower},
        )
    if error_code == "crashed":  # killed by a signal, or died without a word: the same settings again
        return Remedy("crashed", f"{error}; resuming from the last checkpoint", dict(train))
    return None


def _less_memory(error: str, train: dict[str, Any], earlier_ooms: int) -> Remedy | None:
    """The ladder: a smaller micro-batch first, then gradient checkpointing, then smaller micro-batches."""
    micro = int(train.get("micro_batch_size") or 1)
    accum = int(train.get("grad_accum") or 1)
    checkpointing = bool(train.get("gradient_checkpointing"))
    if not checkpointing and (earlier_ooms >= 1 or micro <= 1):
        return Remedy(
            "oom",
            f"{error}; resuming from the last checkpoint with gradient checkpointing (activations are "
            "recomputed instead of kept: less memory, slower steps)",
            {**train, "gradient_checkpointing": True},
        )
    if micro <= 1:
        return None
    smaller = _smaller_micro_batch(micro)
    new_accum = accum * micro // smaller
    return Remedy(
        "oom",
        f"{error}; resuming from the last checkpoint with micro-batch {smaller} x accumulation "
        f"{new_accum} (was {micro} x {accum}, same effective batch {micro * accum})",
        {**train, "micro_batch_size": smaller, "grad_accum": new_accum},
    )


def diagnosis(error_code: str, error: str, previous: list[str]) -> str:
    """The final word when no remedy is left."""
    if len(previous) >= MAX_REMEDIES:
        return f"{error} (gave up after {len(previous)} automatic retries)"
    if error_code == "oom":
        return (
            f"{error}; even micro-batch 1 with gradient checkpointing does not fit: use a smaller model "
            "or a shorter max_seq_len"
        )
    if error_code == "nan_loss":
        return f"{error}; the learning rate is already at its floor: check the data for broken examples"
    return error
