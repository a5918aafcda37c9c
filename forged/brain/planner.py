"""The offline brain's planner: safe, explainable training settings from dataset stats and user overrides.

No network and no ML libraries: the plan comes from a few rules over `DatasetStats`, and every value in it
carries a one-line human reason (forge.v1.PlanDecision), so the user can see why it was chosen and which
values they set themselves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from forge.catalog import Method, Shape, estimate_vram, load_catalog, tiny_family
from forge.train_fields import HEALING_FIELDS, OVERRIDABLE_FIELDS
from pydantic import BaseModel, ConfigDict

from forged.brain import model_choice
from forged.brain.scripts.rows import TEXT_LAYOUT, DataError

BRAIN = "offline"
TINY_MODEL = "tiny"

# TrainSpec's hyper-parameter fields, in the order a plan is shown.
SPEC_FIELDS: tuple[str, ...] = (*OVERRIDABLE_FIELDS, "goal")

# TrainSpec fields that are not hyper-parameters: the daemon fills them, the planner leaves them alone.
_NOT_PLANNED = frozenset({"train_data", "val_data", "export", *HEALING_FIELDS})
_ALIASES = {"batch_size": "micro_batch_size", "lr": "learning_rate", "rank": "lora_rank"}

METHODS: tuple[Method, ...] = ("lora", "qlora")

CHARS_PER_TOKEN = 3.5
SEQ_LEN_MULTIPLE = 64
SEQ_LEN_MIN, SEQ_LEN_MAX = 128, 2048
# Chunk length for plain-text (continued pre-training) data: long enough for paragraph-level context, short
# enough that a small GPU (or the CPU pipeline check) trains a micro-batch of 8 without trouble.
TEXT_CHUNK_LEN = 512
MICRO_BATCH = 8

# The PRD "SmolLM produces NaN" fix: the catalog's smallest size class (forge/catalog.yaml) caps the learning
# rate and LoRA rank of models under its parameter limit.
_SMALL_RULE = "PRD SmolLM stability rule"
_SIZE_IN_NAME = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z0-9])")


class PlanError(ValueError):
    """An override the planner cannot use. str() is one line: what is wrong and what to give instead."""


class StatsLike(Protocol):
    """What the planner reads; satisfied by ingest.DatasetStats and by the forge.v1.DatasetStats message."""

    @property
    def train_examples(self) -> int: ...

    @property
    def val_examples(self) -> int: ...

    @property
    def chars_p95(self) -> int: ...

    @property
    def chars_max(self) -> int: ...


class Decision(BaseModel):
    """Mirrors forge.v1.PlanDecision."""

    model_config = ConfigDict(frozen=True)

    field: str
    value: str
    reason: str


class Plan(BaseModel):
    """Mirrors forge.v1.PlanResponse: spec holds TrainSpec's hyper-parameter fields by name."""

    spec: dict[str, Any]
    decisions: list[Decision]
    brain: str = BRAIN
    memory_bytes: int = 0  # estimated peak GPU memory (estimate_memory); 0: unknown

    def decision(self, field: str) -> Decision:
        return next(d for d in self.decisions if d.field == field)


@dataclass(frozen=True)
class Suggestion:
    """A value an LLM brain proposed, already checked against the catalog, the GPU and the data
    (forged/brain/llm_plan.py); the user's overrides still win and the safety rules still apply."""

    value: Any
    reason: str  # shown as is: says which brain suggested it, and any clamp
    by: str  # the brain, e.g. gemini


@dataclass(frozen=True)
class _Rule:
    kind: Callable[[Any], Any]
    check: Callable[[Any], bool]
    expect: str


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("fraction")
        return int(value)
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("bool")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("not finite")
    return result


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value.strip()


def _lower(value: Any) -> str:
    return _str(value).lower()


_RULES: dict[str, _Rule] = {
    "model": _Rule(_str, bool, "a model name, a local model directory or an HF repo id"),
    "epochs": _Rule(_int, lambda v: 1 <= v <= 1000, "a whole number from 1 to 1000"),
    "max_steps": _Rule(_int, lambda v: v >= 0, "a whole number ≥ 0 (0 runs the epochs)"),
    "micro_batch_size": _Rule(_int, lambda v: 1 <= v <= 4096, "a whole number from 1 to 4096"),
    "grad_accum": _Rule(_int, lambda v: 1 <= v <= 4096, "a whole number from 1 to 4096"),
    "learning_rate": _Rule(_float, lambda v: 0 < v <= 1, "a number above 0 and at most 1, e.g. 2e-4"),
    "lora_rank": _Rule(_int, lambda v: 1 <= v <= 1024, "a whole number from 1 to 1024, e.g. 16"),
    "lora_alpha": _Rule(_int, lambda v: 1 <= v <= 4096, "a whole number from 1 to 4096, e.g. 32"),
    "lora_dropout": _Rule(_float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
    "max_seq_len": _Rule(_int, lambda v: 16 <= v <= 1_048_576, "a whole number of tokens, e.g. 512"),
    "seed": _Rule(_int, lambda v: 0 <= v < 2**64, "a whole number ≥ 0"),
    "checkpoint_every": _Rule(_int, lambda v: v >= 1, "a whole number of steps ≥ 1"),
    "eval_every": _Rule(_int, lambda v: v >= 1, "a whole number of steps ≥ 1"),
    "warmup_ratio": _Rule(_float, lambda v: 0 <= v < 1, "a fraction from 0 up to 1, e.g. 0.05"),
    "method": _Rule(_lower, lambda v: v in METHODS, '"lora" or "qlora" (QLoRA needs an NVIDIA GPU)'),
    "goal": _Rule(_str, lambda v: True, "text"),
}


def plan(
    goal: str,
    stats: StatsLike | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    model: str | None = None,
    cuda: bool = False,
    suggested: Mapping[str, Suggestion] | None = None,
    free_vram: int | None = None,
) -> Plan:
    """Choose every TrainSpec hyper-parameter, with a reason each; user overrides win except the
    small-model safety clamp, which is applied last and reported. `cuda`: this machine has an NVIDIA GPU
    (QLoRA needs one). `suggested`: a brain's proposals, taken where the user set nothing. `free_vram`: free
    memory of the GPU a job would get, for the model choice (model_choice.py)."""
    train_n = _stat(stats, "train_examples")
    if train_n <= 0:
        raise DataError(
            "no training examples to plan for: the prepared data is empty; add examples with a prompt "
            "and an answer and run prepare again"
        )
    val_n = _stat(stats, "val_examples")
    chars_p95, chars_max = _stat(stats, "chars_p95"), _stat(stats, "chars_max")

    user = _normalize_overrides(overrides or {})
    if model and model.strip() and "model" not in user:
        user["model"] = model.strip()

    spec: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    brain_picks = {f: s for f, s in (suggested or {}).items() if f not in user}

    def choose(field: str, default: Any, reason: str) -> Any:
        if field in user:
            spec[field], reasons[field] = user[field], "set by you"
        elif field in brain_picks:
            spec[field], reasons[field] = brain_picks[field].value, brain_picks[field].reason
        else:
            spec[field], reasons[field] = default, reason
        return spec[field]

    # Model first: the learning rate and LoRA shape depend on it.
    picked = model_choice.choose(
        goal,
        _languages(stats),
        free_vram,
        cuda,
        TINY_MODEL,
        # At micro-batch 1: a model that fits there trains, with accumulation making up the batch.
        lambda name, method: estimate_memory({"model": name, "method": method, "micro_batch_size": 1}),
    )
    chosen_model = choose("model", picked.model, picked.reason)
    family = tiny_family(chosen_model)
    if family is not None:
        # Built-in pipeline checks (tiny, tiny-qwen, ...) under their canonical lower-case names.
        chosen_model = spec["model"] = TINY_MODEL if family == "smollm" else f"{TINY_MODEL}-{family}"
    tiny = family is not None

    if train_n < 1000:
        epochs_reason = f"{train_n} training examples is a small set, so each is seen 3 times"
        default_epochs = 3
    elif train_n < 10_000:
        epochs_reason = f"{train_n} training examples: 2 passes learn them without memorising"
        default_epochs = 2
    else:
        epochs_reason = f"{train_n} training examples is plenty for a single pass"
        default_epochs = 1
    epochs = choose("epochs", default_epochs, epochs_reason)
    max_steps = choose("max_steps", 0, "no step limit: run the full epochs")

    micro_default = min(MICRO_BATCH, train_n)
    micro = choose(
        "micro_batch_size",
        micro_default,
        f"{MICRO_BATCH} examples per step, a common LoRA start; lower it if the GPU runs out of memory"
        if micro_default == MICRO_BATCH
        else f"all {train_n} examples in one step",
    )
    target = 8 if train_n < 1000 else 16
    # Never accumulate past the dataset: with 5 examples an effective batch of 16 would be one step.
    accum_default = max(1, min(round(target / micro), train_n // micro))
    grad_accum = choose(
        "grad_accum",
        accum_default,
        f"effective batch {micro * accum_default} (micro {micro} × {accum_default}), aiming for ~{target}: "
        + ("a small set needs many optimizer steps" if target == 8 else "steadier gradients on a larger set"),
    )

    if tiny:
        choose(
            "learning_rate",
            1e-3,
            "random weights need a high rate to visibly learn in minutes (pipeline check)",
        )
        choose("lora_dropout", 0.0, "no dropout: the pipeline check should fit the data quickly")
    else:
        choose("learning_rate", 2e-4, "the usual LoRA rate for instruction tuning")
        choose("lora_dropout", 0.05, "light dropout against overfitting a small dataset")
    choose("lora_rank", 16, "enough capacity for style and format changes at a small memory cost")
    choose("lora_alpha", 32, "alpha = 2 × rank, the usual LoRA scaling")

    if _layout(stats) == TEXT_LAYOUT:
        # Documents are concatenated and cut into chunks, so no document is truncated and every chunk is
        # full: the length is a context size to learn from, not a fit to the examples.
        seq_default = TEXT_CHUNK_LEN
        seq_reason = (
            f"plain text is joined and cut into chunks of {TEXT_CHUNK_LEN} tokens, every token trained; "
            "longer chunks give more context per example at more memory"
        )
    else:
        seq_default, seq_reason = _fitted_seq_len(chars_p95, chars_max)
    choose("max_seq_len", seq_default, seq_reason)

    choose("seed", 42, "fixed seed, so a rerun gives the same result")

    steps_per_epoch = math.ceil(train_n / (micro * grad_accum))
    total_steps = max_steps if max_steps > 0 else steps_per_epoch * epochs
    # Aim for ~10 over the run, but not so often on short runs that saving and evaluating dominate.
    interval = max(5, round(total_steps / 10))
    times = total_steps // interval
    how_often = (
        f"{times} {{}} over ~{total_steps} optimizer steps"
        if times
        else f"no {{}} at this interval: only ~{total_steps} optimizer steps, under the minimum interval of 5"
    )
    eval_note = "" if val_n > 0 else "; there is no validation split (fewer than 10 examples)"
    choose("checkpoint_every", interval, how_often.format("checkpoints") + ", so a stop loses little work")
    choose("eval_every", interval, how_often.format("validation passes") + eval_note)
    choose(
        "warmup_ratio", 0.05, "5% of steps ramp the learning rate up so the first updates do not overshoot"
    )

    method, method_reason = _default_method(chosen_model, tiny, cuda)
    if picked.method == "qlora" and chosen_model == picked.model and cuda:
        method, method_reason = "qlora", picked.reason
    if choose("method", method, method_reason) == "qlora" and not cuda:
        raise PlanError(
            "method qlora needs an NVIDIA GPU with bitsandbytes and this machine has none: use method lora"
        )

    spec["goal"] = goal.strip() or user.get("goal", "")
    reasons["goal"] = (
        "your goal, kept with the job; the offline rules read it only to choose the model"
        if spec["goal"]
        else "no goal given"
    )

    if not tiny:
        _apply_small_model_rule(chosen_model, spec, reasons, user, brain_picks)

    decisions = [Decision(field=f, value=_show(spec[f]), reason=reasons[f]) for f in SPEC_FIELDS]
    chosen = {f: spec[f] for f in SPEC_FIELDS}
    return Plan(spec=chosen, decisions=decisions, memory_bytes=estimate_memory(chosen))


# LoRA targets of a local model whose architecture the catalog lacks: the runner's default (lora_targets.py).
_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def estimate_memory(spec: Mapping[str, Any]) -> int:
    """Peak GPU memory in bytes of a run with these TrainSpec settings: the catalog's VRAM formula
    (forge/catalog.py) at the run's own method, rank, max_seq_len, micro-batch and gradient checkpointing
    (self-healing changes the last two and the method; a healed job's reservation is this again). 0 when
    the model's shape is unknown (a hub model outside the catalog, or a built-in pipeline check, whose size
    depends on its tokenizer): the scheduler then gives the job a GPU of its own."""
    model = str(spec.get("model") or TINY_MODEL)
    if tiny_family(model) is not None:
        return 0
    catalog = load_catalog()
    found = catalog.find_model(model)
    if found is not None:
        shape, params = found.shape, found.params
        targets = catalog.families[found.family].lora_targets
    else:
        read = _config_shape(Path(model).expanduser() / "config.json")
        if read is None:
            return 0
        shape, model_type = read
        params = shape.param_count()
        targets = catalog.lora_targets_for(model_type) or _DEFAULT_TARGETS
    method: Method = "qlora" if str(spec.get("method") or "lora").lower() == "qlora" else "lora"
    return estimate_vram(
        shape,
        targets,
        method,
        rank=int(spec.get("lora_rank") or catalog.size_class(params).lora_rank),
        seq_len=int(spec.get("max_seq_len") or catalog.vram.seq_len),
        micro_batch=int(spec.get("micro_batch_size") or catalog.vram.micro_batch),
        assumptions=catalog.vram,
        params=params,
        gradient_checkpointing=bool(spec.get("gradient_checkpointing")),
    ).total


def _apply_small_model_rule(
    model: str,
    spec: dict[str, Any],
    reasons: dict[str, str],
    user: Mapping[str, Any],
    suggested: Mapping[str, Suggestion],
) -> None:
    """Last word on safety: applied after overrides too, and said so in the reason."""
    small = load_catalog().size_classes[0]
    params, source = estimate_params(model)
    if params is None or small.below_params is None or params >= small.below_params:
        return
    limit = f"{small.below_params / 1e6:.0f}M"
    why = (
        f"{_SMALL_RULE}: {model} has ~{params / 1e6:.0f}M parameters ({source}), "
        f"and models under {limit} diverge"
    )

    def who(field: str, before: Any) -> str:
        if field in user:
            return f"set by you ({_show(before)}), "
        if field in suggested:
            return f"{suggested[field].by} suggested {_show(before)}, "
        return ""

    if spec["learning_rate"] > small.learning_rate:
        before = spec["learning_rate"]
        spec["learning_rate"] = small.learning_rate
        reasons["learning_rate"] = (
            f"{who('learning_rate', before)}capped at {_show(small.learning_rate)} by the {why} at higher "
            "rates (not the PRD's 1e-5, which is too slow for LoRA)"
        )
    if spec["lora_rank"] > small.lora_rank:
        before = spec["lora_rank"]
        spec["lora_rank"] = small.lora_rank
        reasons["lora_rank"] = (
            f"{who('lora_rank', before)}capped at {small.lora_rank} by the {why} with larger adapters"
        )
        if "lora_alpha" not in user:
            # Keep the catalog's alpha/rank ratio: a large scaling on a small adapter undoes the cap.
            spec["lora_alpha"] = small.lora_alpha
            reasons["lora_alpha"] = f"alpha = {small.lora_alpha} for rank {small.lora_rank} ({_SMALL_RULE})"


def _default_method(model: str, tiny: bool, cuda: bool) -> tuple[Method, str]:
    """The catalog's size class says LoRA or QLoRA; QLoRA only where it can run (CUDA)."""
    if tiny:
        return "lora", "the pipeline check is small: LoRA on full-precision weights"
    params, source = estimate_params(model)
    if params is None:
        return "lora", "the model's size is unknown, so LoRA on 16-bit weights (QLoRA is for 7B and up)"
    size = load_catalog().size_class(params)
    about = f"{model} has ~{_count(params)} parameters ({source})"
    if size.method == "lora":
        return "lora", f"{about}: LoRA on 16-bit weights fits a common GPU"
    if cuda:
        return "qlora", f"{about}: QLoRA, LoRA on 4-bit base weights, so it fits a 24 GB card"
    return "lora", (
        f"{about}, which would train as QLoRA on 4-bit weights, but QLoRA needs an NVIDIA GPU and this "
        "machine has none: LoRA on full weights, slow and memory-hungry without a GPU"
    )


def _count(params: int) -> str:
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def estimate_params(model: str) -> tuple[int | None, str]:
    """Rough parameter count of a real model and where it came from; (None, "") when unknown."""
    directory = Path(model).expanduser()
    config_path = directory / "config.json"
    if directory.is_dir() and config_path.is_file():
        count = _params_from_config(config_path)
        if count is not None:
            return count, "estimated from its config.json"
    known = load_catalog().known_params(model)
    if known is not None:
        return known, "known model"
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    match = _SIZE_IN_NAME.search(base)
    if match:
        scale = 1e6 if match.group(2) == "m" else 1e9
        return round(float(match.group(1)) * scale), "from its name"
    return None, ""


def _params_from_config(path: Path) -> int | None:
    """Decoder-only transformer estimate from HF config.json: embeddings + attention + gated MLP + norms."""
    read = _config_shape(path)
    return None if read is None else read[0].param_count()


def _config_shape(path: Path) -> tuple[Shape, str] | None:
    """The shape and model_type an HF config.json describes; None if it is missing or not a decoder."""
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg = cfg.get("text_config", cfg)
        hidden = int(cfg["hidden_size"])
        heads = int(cfg.get("num_attention_heads") or 1)
        shape = Shape(
            vocab=int(cfg["vocab_size"]),
            hidden=hidden,
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return shape, str(cfg.get("model_type") or "")


def _normalize_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    for raw_key, value in overrides.items():
        key = _ALIASES.get(
            raw_key.strip().lower().replace("-", "_"), raw_key.strip().lower().replace("-", "_")
        )
        if key in _NOT_PLANNED or value is None or (isinstance(value, str) and not value.strip()):
            continue
        rule = _RULES.get(key)
        if rule is None:
            raise PlanError(f"unknown setting '{raw_key}': use one of {', '.join(SPEC_FIELDS)}")
        try:
            coerced = rule.kind(value)
        except (TypeError, ValueError):
            coerced = None
        if coerced is None or not rule.check(coerced):
            raise PlanError(f"{key} {value!r} is not valid: give {rule.expect}")
        user[key] = coerced
    return user


def _fitted_seq_len(chars_p95: int, chars_max: int) -> tuple[int, str]:
    tokens_p95 = chars_p95 / CHARS_PER_TOKEN
    fitted = math.ceil(tokens_p95 / SEQ_LEN_MULTIPLE) * SEQ_LEN_MULTIPLE
    seq_len = min(SEQ_LEN_MAX, max(SEQ_LEN_MIN, fitted))
    reason = f"95% of examples are under ~{math.ceil(tokens_p95)} tokens (chars/{CHARS_PER_TOKEN} estimate)"
    if fitted > SEQ_LEN_MAX:
        reason += f"; capped at {SEQ_LEN_MAX} to keep memory predictable"
    tokens_max = math.ceil(chars_max / CHARS_PER_TOKEN)
    if tokens_max > seq_len:
        reason += f"; longer ones (up to ~{tokens_max} tokens) are truncated"
    return seq_len, reason


def _layout(stats: StatsLike | Mapping[str, Any]) -> str:
    value = stats.get("layout", "") if isinstance(stats, Mapping) else getattr(stats, "layout", "")
    return value if isinstance(value, str) else ""


def _languages(stats: StatsLike | Mapping[str, Any]) -> list[str]:
    value = stats.get("languages", []) if isinstance(stats, Mapping) else getattr(stats, "languages", [])
    return [str(v) for v in value or []]


def _stat(stats: StatsLike | Mapping[str, Any], field: str) -> int:
    value = stats.get(field, 0) if isinstance(stats, Mapping) else getattr(stats, field, 0)
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        raise DataError(f"dataset stats field {field} is {value!r}, not a count: run prepare again") from None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
