"""TrainSpec's hyper-parameters by name: what the planner decides, a user may override, the runner reads."""

from __future__ import annotations

HPARAM_FIELDS: tuple[str, ...] = (
    "epochs",
    "max_steps",
    "micro_batch_size",
    "grad_accum",
    "learning_rate",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "max_seq_len",
    "seed",
    "checkpoint_every",
    "eval_every",
    "warmup_ratio",
    "method",
)
# What a user may set on the command line: the model and every hyper-parameter.
OVERRIDABLE_FIELDS: tuple[str, ...] = ("model", *HPARAM_FIELDS)
# Settings forged's self-healing may turn on for a job's next attempt; the planner leaves them alone.
HEALING_FIELDS: tuple[str, ...] = ("gradient_checkpointing", "seq_cap_percentile", "no_fp16")
# Everything the runner receives as `hparams`.
RUNNER_FIELDS: tuple[str, ...] = (*HPARAM_FIELDS, *HEALING_FIELDS)
