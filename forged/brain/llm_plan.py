"""A plan an LLM brain proposes and the offline planner checks.

The brain sees the goal, the data's statistics (no examples), the catalog's model names and the free GPU
memory, and answers with a `PlanAnswer`: a model and the main hyper-parameters, each with a reason. Each
value then has to pass the safety checks before the offline planner takes it as a suggestion: the model
must be in forge's catalog and fit the GPU, the sequence length must stay within the data's 99th
percentile and the model's context, and the planner's own rules (the PRD's SmolLM rule) still cap the rate
and the rank. The user's explicit settings always win. Every decision says which brain made it and whether
a check changed it; when the brain cannot answer, the offline plan comes back with a note saying why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forge.catalog import GIB, Method, Model, load_catalog, tiny_family
from pydantic import BaseModel, Field

from forged.brain import planner
from forged.brain.ingest import TEXT_LAYOUT
from forged.brain.llm.base import BrainError, LLMBrain
from forged.brain.planner import Decision, Plan, Suggestion

# Leave this share of a GPU's free memory unplanned: other processes, allocator growth, the estimate's error.
VRAM_HEADROOM = 0.10

_SYSTEM = (
    "You plan LoRA fine-tuning runs for Forge. Choose a base model from the catalog given and its training "
    "settings for the user's goal and data. Prefer the smallest model that can serve the goal; use the "
    "catalog names exactly. Give a short reason for each value. Answer with JSON only."
)


class _Reasoned(BaseModel):
    reason: str = Field(min_length=3, max_length=400)


class ModelPick(_Reasoned):
    value: str = Field(min_length=1, max_length=200, description="a catalog model name")


class RankPick(_Reasoned):
    value: int = Field(ge=1, le=256)


class AlphaPick(_Reasoned):
    value: int = Field(ge=1, le=1024)


class RatePick(_Reasoned):
    value: float = Field(gt=0, le=0.01)


class EpochsPick(_Reasoned):
    value: int = Field(ge=1, le=50)


class BatchPick(_Reasoned):
    value: int = Field(ge=1, le=512)


class SeqLenPick(_Reasoned):
    value: int = Field(ge=16, le=131_072)


class PlanAnswer(BaseModel):
    """What the brain must answer: a value and a reason for each setting it decides."""

    model: ModelPick
    lora_rank: RankPick
    lora_alpha: AlphaPick
    learning_rate: RatePick
    epochs: EpochsPick
    micro_batch_size: BatchPick
    max_seq_len: SeqLenPick


@dataclass(frozen=True)
class GpuRoom:
    """The free memory of the GPU a job would run on; None when forged sees no NVIDIA GPU."""

    free_bytes: int | None
    cuda: bool


def _num(stats: Mapping[str, Any], field: str) -> int:
    try:
        return max(0, int(stats.get(field) or 0))
    except (TypeError, ValueError):
        return 0


def _prompt(goal: str, stats: Mapping[str, Any], room: GpuRoom, offline: Plan) -> str:
    catalog = load_catalog()
    models = [
        {"name": m.name, "params": m.params, "context": m.context_length, "family": m.family}
        for m in catalog.models
    ]
    shown_stats = {k: v for k, v in stats.items() if v not in ("", 0, "0", [], {}, None)}
    gpu = (
        f"{room.free_bytes / GIB:.1f} GiB free on the GPU"
        if room.free_bytes is not None
        else "no NVIDIA GPU reported (CPU only; keep the model small)"
    )
    return (
        f"Goal: {goal or '(none given)'}\n"
        f"Dataset statistics: {json.dumps(shown_stats, sort_keys=True)}\n"
        f"Hardware: {gpu}\n"
        f"Catalog models: {json.dumps(models)}\n"
        "Also allowed: 'tiny', a random-weight pipeline check that learns only the data's format.\n"
        f"The offline rules would choose: {json.dumps(offline.spec, default=str)}"
    )


def _needs(model: Model, rank: int, seq_len: int, micro: int, method: Method) -> int:
    """Bytes the run needs on the GPU at these settings: the planner's one estimate (catalog formula)."""
    spec = {"model": model.repo, "lora_rank": rank, "max_seq_len": seq_len, "micro_batch_size": micro}
    return planner.estimate_memory({**spec, "method": method})


def _seq_cap(stats: Mapping[str, Any]) -> tuple[int | None, str]:
    """The longest sequence the data justifies: its 99th percentile in tokens (or the chars estimate)."""
    if str(stats.get("layout", "")) == TEXT_LAYOUT:
        return None, ""
    p99 = _num(stats, "tokens_p99")
    if p99:
        measured, how = p99, f"99% of examples are at most {p99} tokens"
    else:
        chars = _num(stats, "chars_max") or _num(stats, "chars_p95")
        if not chars:
            return None, ""
        measured = math.ceil(chars / planner.CHARS_PER_TOKEN)
        how = f"the longest example is ~{measured} tokens (chars/{planner.CHARS_PER_TOKEN} estimate)"
    cap = max(planner.SEQ_LEN_MIN, math.ceil(measured / planner.SEQ_LEN_MULTIPLE) * planner.SEQ_LEN_MULTIPLE)
    return cap, how


def _checked(
    answer: PlanAnswer, stats: Mapping[str, Any], user: Mapping[str, Any], room: GpuRoom, by: str
) -> tuple[dict[str, Suggestion], dict[str, str]]:
    """The brain's values that pass the safety checks (some clamped), and for rejected ones why."""
    picks: dict[str, Any] = {f: getattr(answer, f).value for f in PlanAnswer.model_fields}
    why: dict[str, str] = {f: f"{by}: {getattr(answer, f).reason}" for f in PlanAnswer.model_fields}
    rejected: dict[str, str] = {}

    model: Model | None = None
    name = str(user.get("model") or picks["model"]).strip()
    if "model" not in user:
        family = tiny_family(name)
        model = load_catalog().find_model(name)
        if family is not None:
            picks["model"] = planner.TINY_MODEL if family == "smollm" else f"{planner.TINY_MODEL}-{family}"
        elif model is None:
            rejected["model"] = (
                f"{by} suggested {name!r}, which is not in forge's catalog, so it was not used"
            )
            del picks["model"]
        else:
            picks["model"] = model.name
    else:
        model = load_catalog().find_model(name)

    if model is not None and "max_seq_len" not in user and picks["max_seq_len"] > model.context_length:
        before, picks["max_seq_len"] = picks["max_seq_len"], model.context_length
        why["max_seq_len"] += (
            f"; {by} suggested {before}, capped at {model.name}'s context of {model.context_length}"
        )
    cap, how = _seq_cap(stats)
    if cap is not None and "max_seq_len" not in user and picks["max_seq_len"] > cap:
        before, picks["max_seq_len"] = picks["max_seq_len"], cap
        why["max_seq_len"] += f"; {by} suggested {before}, capped at {cap}: {how}"

    if model is not None and room.free_bytes is not None and "model" in picks:
        budget = int(room.free_bytes * (1 - VRAM_HEADROOM))
        rank = int(user.get("lora_rank") or picks["lora_rank"])
        seq = int(user.get("max_seq_len") or picks["max_seq_len"])
        micro = int(user.get("micro_batch_size") or picks["micro_batch_size"])
        # The planner trains QLoRA where the catalog's size class says so and there is CUDA to run it.
        method: Method = load_catalog().size_class(model.params).method if room.cuda else "lora"
        while (
            micro > 1 and _needs(model, rank, seq, micro, method) > budget and "micro_batch_size" not in user
        ):
            micro //= 2
        need = _needs(model, rank, seq, micro, method)
        if need > budget:
            rejected["model"] = (
                f"{by} suggested {model.name}, which needs ~{need / GIB:.1f} GiB at micro-batch {micro} and "
                f"does not fit the {room.free_bytes / GIB:.1f} GiB free (less {VRAM_HEADROOM:.0%} headroom)"
            )
            del picks["model"]
        elif micro != picks["micro_batch_size"]:
            why["micro_batch_size"] += (
                f"; {by} suggested {picks['micro_batch_size']}, lowered to {micro} so {model.name} fits the "
                f"{room.free_bytes / GIB:.1f} GiB free (~{need / GIB:.1f} GiB)"
            )
            picks["micro_batch_size"] = micro

    suggestions = {f: Suggestion(v, why[f], by) for f, v in picks.items() if f not in user}
    return suggestions, rejected


def plan(
    goal: str,
    stats: Mapping[str, Any],
    overrides: Mapping[str, Any],
    brain: LLMBrain | None,
    room: GpuRoom,
    unavailable: str = "",
) -> Plan:
    """The brain's plan, checked; the offline plan (with a note) when there is no brain or it fails.
    `unavailable`: why the chosen brain could not even be set up (no key), told to the user."""
    offline = planner.plan(
        goal, stats, overrides, cuda=room.cuda, free_vram=room.free_bytes
    )  # also validates the user's overrides
    if brain is None:
        return _noted(offline, unavailable) if unavailable else offline
    try:
        answer = brain.ask(_SYSTEM, _prompt(goal, stats, room, offline), PlanAnswer)
    except BrainError as exc:
        return _noted(offline, f"{exc}")
    user = {k: v for k, v in overrides.items() if v not in (None, "", 0)}
    suggestions, rejected = _checked(answer, stats, user, room, brain.name)
    result = planner.plan(
        goal, stats, overrides, cuda=room.cuda, suggested=suggestions, free_vram=room.free_bytes
    )
    decisions = [
        Decision(field=d.field, value=d.value, reason=f"{d.reason}; {rejected[d.field]}")
        if d.field in rejected
        else d
        for d in result.decisions
    ]
    used = any(f in suggestions for f in PlanAnswer.model_fields)
    return Plan(
        spec=result.spec,
        decisions=decisions,
        brain=brain.name if used else planner.BRAIN,
        memory_bytes=result.memory_bytes,
    )


def _noted(offline: Plan, why: str) -> Plan:
    note = Decision(field="brain", value=planner.BRAIN, reason=f"the offline rules decided: {why}")
    return Plan(
        spec=offline.spec,
        decisions=[*offline.decisions, note],
        brain=planner.BRAIN,
        memory_bytes=offline.memory_bytes,
    )
