"""forge's model catalog (catalog.yaml beside this file): the seed models, their families and defaults.

Shared by forged (resolving `--model`, planning) and the runner (LoRA targets), so it imports neither torch
nor transformers. Look a model up with `find_model` by its canonical name (`qwen2.5-3b`), the PRD's short
name (`qwen`) or its Hugging Face repo id (`Qwen/Qwen2.5-3B-Instruct`).

VRAM estimate (`estimate_vram`, bytes; docs/model-catalog.md works two examples by hand). With P parameters,
of which P_emb = vocab x hidden x (1 if tied else 2) are the embedding and LM head, T = seq_len x micro_batch
tokens per micro-batch and L layers:

    weights      LoRA: 2 x P (bf16).  QLoRA: 2 x P_emb + (4.127 / 8) x (P - P_emb): NF4 is 4 bits per weight
                 plus an 8-bit absmax per 64 weights plus a 32-bit constant per 256 absmax (double
                 quantization); bitsandbytes leaves the embedding and LM head in 16 bits
    adapter      16 x P_lora: fp32 weight, fp32 gradient and Adam's two fp32 moments for every LoRA
                 parameter, P_lora = rank x sum over target modules of (in_features + out_features) x L
    activations  T x (L x 2 x (8 x hidden + 2 x q_dim + 2 x kv_dim + 4 x intermediate) + 10 x vocab):
                 per layer and token, the bf16 tensors autograd keeps without gradient checkpointing: each
                 of the two RMSNorms' input, its fp32 copy (2 units) and output (4 x hidden per norm), q, the
                 attention output (q_dim each), k and v (kv_dim each), and the MLP's gate, up, act(gate) and
                 their product (4 x intermediate); per token the logits in bf16 (2 bytes), their fp32 copy for
                 the loss (4) and its gradient (4). With gradient checkpointing autograd keeps only each
                 layer's input (2 x hidden) and recomputes one layer at a time during the backward pass:
                 T x (L x 2 x hidden + 2 x (8 x hidden + ...) + 10 x vocab), one layer's full set
    total        (weights + adapter + activations) x (1 + fragmentation) + CUDA overhead (context, cuBLAS
                 workspaces)

It is an upper bound for the runner: sequences are padded only to the longest in the micro-batch, and logits
are computed only where the loss is taken. For the same reason a sequence cap (self-healing's cut at the
data's 99th percentile) leaves it unchanged: only the runner knows that length, and max_seq_len bounds it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
GIB = 1024**3
TINY = "tiny"
# The PRD's `--model` flags; the catalog must give each exactly one model.
PRD_SHORT_NAMES = ("smollm", "tinyllama", "llama", "qwen", "phi", "gemma", "mistral")
QLORA_BITS_PER_WEIGHT = 4 + 8 / 64 + 32 / (64 * 256)
Method = Literal["lora", "qlora"]
_INSTRUCT_SUFFIXES = ("-instruct", "-it", "-chat-v1.0")


class CatalogError(ValueError):
    """catalog.yaml is inconsistent; the message names the entry and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinySource(_Strict):
    """Where the family's `tiny-<family>` pipeline-check model gets its tokenizer and config."""

    tokenizer: Literal["real", "stand-in"]
    source: str
    note: str = ""


class Family(_Strict):
    name: str = ""
    architecture: str
    model_type: str
    lora_targets: tuple[str, ...] = Field(min_length=1)
    chat_template: str
    qkv_bias: bool = False
    post_norms: bool = Field(False, description="Gemma 2: norms after attention and MLP as well as before")
    tiny: TinySource


class Shape(_Strict):
    """The parts of a model's config.json that its parameter count and memory depend on."""

    vocab: int = Field(gt=0)
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int | None = Field(None, gt=0)
    intermediate: int = Field(gt=0)
    tied_embeddings: bool

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection in one layer, by module name (fused and not)."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "qkv_proj": (h, q + 2 * kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "gate_up_proj": (h, 2 * i),
            "down_proj": (i, h),
        }

    def param_count(self, qkv_bias: bool = False, post_norms: bool = False) -> int:
        attention = 2 * self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim
        if qkv_bias:
            attention += self.q_dim + 2 * self.kv_dim
        norms = (4 if post_norms else 2) * self.hidden
        layer = attention + 3 * self.hidden * self.intermediate + norms
        return self.embedding_params + self.layers * layer + self.hidden

    def lora_params(self, targets: tuple[str, ...], rank: int) -> int:
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise CatalogError(f"no shape known for LoRA target(s) {', '.join(unknown)}")
        return rank * self.layers * sum(sum(shapes[t]) for t in targets)


class Model(_Strict):
    name: str
    family: str
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    short_name: str | None = None
    params: int = Field(gt=0)
    context_length: int = Field(gt=0)
    gated: bool = Field(False, description="the hub asks you to accept a licence first (needs HF_TOKEN)")
    shape: Shape

    @property
    def name_prefix(self) -> str:
        """The repo name without its instruct/chat suffix: matches the base model and its variants too."""
        base = self.repo.rsplit("/", 1)[-1].lower()
        for suffix in _INSTRUCT_SUFFIXES:
            base = base.removesuffix(suffix)
        return base


class SizeClass(_Strict):
    """Default hyper-parameters for models under `below_params` parameters (the last class has no limit)."""

    name: str
    below_params: int | None = Field(None, gt=0)
    learning_rate: float = Field(gt=0, le=1)
    lora_rank: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    lora_dropout: float = Field(ge=0, lt=1)
    precision: Literal["bf16", "fp16", "fp32"]
    method: Method
    reason: str


class VramAssumptions(_Strict):
    seq_len: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    cuda_overhead_gib: float = Field(ge=0)
    fragmentation: float = Field(ge=0, lt=1)


class VramEstimate(_Strict):
    """Bytes, by part; `total` is what a GPU needs free."""

    method: Method
    weights: int
    adapter: int
    activations: int
    overhead: int
    total: int

    @property
    def total_gib(self) -> float:
        return self.total / GIB


class Catalog(_Strict):
    size_classes: tuple[SizeClass, ...] = Field(min_length=1)
    vram: VramAssumptions
    families: dict[str, Family]
    models: tuple[Model, ...]
    other_params: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for key, family in self.families.items():
            if family.name not in ("", key):
                raise ValueError(f"family {key}: name {family.name!r} differs from its key")
        seen: dict[str, str] = {}
        for m in self.models:
            family = self.families.get(m.family)
            if family is None:
                raise ValueError(f"model {m.name}: unknown family {m.family!r}")
            counted = m.shape.param_count(family.qkv_bias, family.post_norms)
            if counted != m.params:
                raise ValueError(f"model {m.name}: shape gives {counted:,} parameters, not {m.params:,}")
            for key in filter(None, (m.name, m.repo, m.short_name)):
                if key.lower() in seen:
                    raise ValueError(f"model {m.name}: {key!r} already names {seen[key.lower()]}")
                seen[key.lower()] = m.name
        shorts = {m.short_name for m in self.models if m.short_name}
        if shorts != set(PRD_SHORT_NAMES):
            raise ValueError(f"short names must be {', '.join(PRD_SHORT_NAMES)}; got {sorted(shorts)}")
        limits = [c.below_params for c in self.size_classes]
        bounded = [limit for limit in limits[:-1] if limit is not None]
        if len(bounded) != len(limits) - 1 or limits[-1] is not None or bounded != sorted(bounded):
            raise ValueError("size_classes: ascending below_params, and only the last without a limit")
        return self

    def family(self, name: str) -> Family:
        return self.families[name].model_copy(update={"name": name})

    def find_model(self, name: str) -> Model | None:
        """By canonical name, PRD short name or HF repo id, ignoring case."""
        key = name.strip().lower()
        for m in self.models:
            if key in (m.name, m.repo.lower(), (m.short_name or "")):
                return m
        return None

    def known_params(self, name: str) -> int | None:
        """Parameter count of a model named by a catalog key, or by a repo/base name starting with one of the
        catalog's name prefixes (`Qwen/Qwen2.5-0.5B` is the base of qwen2.5-0.5b)."""
        found = self.find_model(name)
        if found is not None:
            return found.params
        base = name.strip().rstrip("/").rsplit("/", 1)[-1].lower()
        prefixes = {m.name_prefix: m.params for m in self.models} | self.other_params
        for prefix in sorted(prefixes, key=len, reverse=True):
            if base == prefix or base.startswith(prefix + "-"):
                return prefixes[prefix]
        return None

    def size_class(self, params: int) -> SizeClass:
        for size in self.size_classes:
            if size.below_params is None or params < size.below_params:
                return size
        raise AssertionError("the last size class has no limit")  # guaranteed by the validator

    def lora_targets_for(self, model_type: str) -> tuple[str, ...] | None:
        """LoRA targets for a config.json `model_type`, or None for an architecture the catalog lacks."""
        for family in self.families.values():
            if family.model_type == model_type:
                return family.lora_targets
        return None

    def estimate_vram(self, model: Model, method: Method | None = None) -> VramEstimate:
        """The model's estimate at the catalog's assumptions and its size class's rank (and method)."""
        size = self.size_class(model.params)
        family = self.families[model.family]
        return estimate_vram(
            model.shape,
            family.lora_targets,
            method or size.method,
            rank=size.lora_rank,
            seq_len=self.vram.seq_len,
            micro_batch=self.vram.micro_batch,
            assumptions=self.vram,
            params=model.params,
        )


def estimate_vram(
    shape: Shape,
    targets: tuple[str, ...],
    method: Method,
    *,
    rank: int,
    seq_len: int,
    micro_batch: int,
    assumptions: VramAssumptions,
    params: int | None = None,
    gradient_checkpointing: bool = False,
) -> VramEstimate:
    """Bytes a LoRA or QLoRA fine-tune needs on the GPU; the formula is in this module's docstring."""
    total_params = params if params is not None else shape.param_count()
    if method == "lora":
        weights = 2 * total_params
    else:
        quantized = total_params - shape.embedding_params
        weights = 2 * shape.embedding_params + round(quantized * QLORA_BITS_PER_WEIGHT / 8)
    adapter = 16 * shape.lora_params(targets, rank)
    per_layer = 2 * (8 * shape.hidden + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.intermediate)
    kept = shape.layers * 2 * shape.hidden + per_layer if gradient_checkpointing else shape.layers * per_layer
    activations = seq_len * micro_batch * (kept + 10 * shape.vocab)
    subtotal = weights + adapter + activations
    overhead = round(subtotal * assumptions.fragmentation + assumptions.cuda_overhead_gib * GIB)
    return VramEstimate(
        method=method,
        weights=weights,
        adapter=adapter,
        activations=activations,
        overhead=overhead,
        total=subtotal + overhead,
    )


@functools.cache
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """The validated catalog; a broken catalog.yaml raises CatalogError with the entry and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Catalog.model_validate(raw)
    except (OSError, yaml.YAMLError) as e:
        raise CatalogError(f"cannot read the model catalog {path}: {e}") from e
    except ValueError as e:
        raise CatalogError(f"the model catalog {path} is invalid: {e}") from e


def find_model(name: str) -> Model | None:
    return load_catalog().find_model(name)


def tiny_family(name: str) -> str | None:
    """The family of a built-in pipeline-check model: `tiny` is smollm's, `tiny-qwen` qwen's; else None."""
    key = name.strip().lower()
    if key == TINY:
        return "smollm"
    family = key.removeprefix(TINY + "-")
    return family if family != key and family in load_catalog().families else None
