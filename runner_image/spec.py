"""The runner's input: the spec file forged writes (see docs/runner-protocol.md).

The models mirror the JSON in the protocol doc field for field. Unknown fields are rejected so that a typo in
forged (or a newer forged talking to an older runner) fails loudly instead of silently training with defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner_image.errors import RunnerError
from runner_image.tiny_tokenizers import FAMILIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: str) -> str:
    # Relative paths are taken relative to the working directory (the job workspace) and made absolute here,
    # because every path the runner reports back in an event must be absolute.
    if not value:
        raise ValueError("must be a non-empty path")
    return str(Path(value).expanduser().absolute())


class ModelRef(_Strict):
    """Which base model to fine-tune: a built-in random-weight `tiny` model of some family (default smollm,
    the original `tiny`), or a local HF model directory."""

    kind: Literal["tiny", "path"]
    path: str | None = None
    family: str | None = None

    @field_validator("path")
    @classmethod
    def _make_absolute(cls, value: str | None) -> str | None:
        return _absolute(value) if value else value

    @model_validator(mode="after")
    def _path_matches_kind(self) -> Self:
        if self.kind == "path" and not self.path:
            raise ValueError('model.kind "path" needs model.path (a local Hugging Face model directory)')
        if self.kind == "tiny" and self.path is not None:
            raise ValueError('model.kind "tiny" takes no model.path')
        if self.kind == "path" and self.family is not None:
            raise ValueError('model.family is only for model.kind "tiny"')
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"unknown tiny family {self.family!r}: use one of {', '.join(FAMILIES)}")
        return self

    @property
    def tiny_family(self) -> str:
        return self.family or "smollm"


class HParams(_Strict):
    """Training hyperparameters. The defaults equal the example in the protocol doc; forged sends them all."""

    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0 runs `epochs` epochs")
    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    max_seq_len: int = Field(512, ge=8)
    seed: int = Field(42, ge=0)
    checkpoint_every: int = Field(
        20, ge=0, description="optimizer steps between checkpoints; 0: only on SIGTERM"
    )
    eval_every: int = Field(20, ge=0, description="optimizer steps between evals; 0: only baseline and end")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, about a third slower"
    )
    method: Literal["lora", "qlora"] = Field(
        "lora", description="qlora: LoRA on 4-bit (NF4) base weights; needs CUDA and bitsandbytes"
    )
    seq_cap_percentile: float = Field(
        0,
        ge=0,
        le=100,
        description="cut training examples to this percentile of their token lengths (forged's out-of-memory "
        "remedy sets 99); 0: no cap beyond max_seq_len",
    )
    no_fp16: bool = Field(
        False,
        description="where fp16 would be used, train in bf16 if the GPU supports it, else fp32 (forged's "
        "remedy for a NaN under fp16)",
    )


class RunnerSpec(_Strict):
    job_id: str = Field(min_length=1)
    model: ModelRef
    train_file: str
    val_file: str | None = None
    output_dir: str
    checkpoint_dir: str
    hparams: HParams = Field(default_factory=HParams)

    @field_validator("train_file", "output_dir", "checkpoint_dir")
    @classmethod
    def _make_absolute(cls, value: str) -> str:
        return _absolute(value)

    @field_validator("val_file")
    @classmethod
    def _make_val_absolute(cls, value: str | None) -> str | None:
        # An empty string is how proto3 spells "unset", so treat it like null.
        return _absolute(value) if value else None


class MergeSpec(_Strict):
    """`python -m runner_image merge --spec FILE`: fold a job's LoRA adapter into its base model."""

    job_id: str = Field(min_length=1)
    model: ModelRef
    adapter_dir: str
    output_dir: str

    @field_validator("adapter_dir", "output_dir")
    @classmethod
    def _make_absolute(cls, value: str) -> str:
        return _absolute(value)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "spec"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def load_spec(path: str | Path) -> RunnerSpec:
    """Read and validate a spec file; every failure is a RunnerError with code bad_spec (exit 2)."""
    return parse_spec(_read_json(path))


def load_merge_spec(path: str | Path) -> MergeSpec:
    try:
        return MergeSpec.model_validate(_read_json(path))
    except ValidationError as e:
        raise RunnerError(
            "bad_spec", f"invalid merge spec: {_describe(e)}", hint="see docs/runner-protocol.md"
        ) from e


def _read_json(path: str | Path) -> object:
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as e:
        raise RunnerError("bad_spec", f"cannot read spec file {p}: {e.strerror or e}") from e
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RunnerError("bad_spec", f"spec file {p} is not valid JSON: {e}") from e
    return data


def parse_spec(data: object) -> RunnerSpec:
    try:
        return RunnerSpec.model_validate(data)
    except ValidationError as e:
        raise RunnerError(
            "bad_spec", f"invalid runner spec: {_describe(e)}", hint="see docs/runner-protocol.md"
        ) from e
