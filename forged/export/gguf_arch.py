"""What each supported architecture needs in GGUF: its hyperparameter keys and its tensor fix-ups.

Tensor names come from gguf's own TensorNameMap (the table llama.cpp's converter uses); this module only
holds what differs between the families: llama's q/k row permutation (HF stores rotary halves, llama.cpp
interleaves them), Gemma's RMSNorm that multiplies by (1 + w), and the rope tensors some configs imply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forged.export.errors import ExportError

# HF class name -> llama.cpp architecture. Mistral's dense models are llama in llama.cpp.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Phi3ForCausalLM": "phi3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
}

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def supported_list() -> str:
    return ", ".join(sorted(ARCHITECTURES))


@dataclass
class ArchPlan:
    """How one model's config maps onto GGUF: the keys to write and the per-tensor fix-ups."""

    arch: str
    config: dict[str, Any]
    permute_qk: bool
    norm_plus_one: bool
    tied: bool
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_head(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def n_head_kv(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.n_head)

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.n_head)

    def skips(self, hf_name: str) -> bool:
        """Tensors HF saves that llama.cpp derives itself."""
        if hf_name.endswith("rotary_emb.inv_freq"):
            return True
        return self.tied and hf_name == "lm_head.weight"

    def fix(self, hf_name: str, data: np.ndarray) -> np.ndarray:
        """The tensor as llama.cpp's graph for this architecture expects it (float32 in, float32 out)."""
        if self.permute_qk and hf_name.endswith("self_attn.q_proj.weight"):
            return permute_qk(data, self.n_head)
        if self.permute_qk and hf_name.endswith("self_attn.k_proj.weight"):
            return permute_qk(data, self.n_head_kv)
        if self.norm_plus_one and hf_name.endswith("norm.weight"):
            return data + 1.0
        return data

    def add_hparams(self, writer: Any) -> None:
        _HPARAMS[self.arch](self, writer)


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate_half layout -> llama.cpp's interleaved pairs, per head (as llama.cpp's converter does)."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def rope_theta(config: dict[str, Any]) -> float:
    # transformers 5 writes rope_parameters; older configs (and the hub's) have rope_theta at the top level
    params = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or params.get("rope_theta") or 10000.0)


def rope_scaling(config: dict[str, Any]) -> dict[str, Any] | None:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or None
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    return None if kind == "default" else {**scaling, "rope_type": kind}


def plan(config: dict[str, Any]) -> ArchPlan:
    """The plan for this config.json, or ExportError naming the supported architectures."""
    names = config.get("architectures") or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        shown = ", ".join(names) or f"model_type {config.get('model_type')!r}"
        raise ExportError(
            f"cannot export {shown} to GGUF: Forge converts only {supported_list()}; "
            "fine-tune one of those families to export it"
        )
    tied = bool(config.get("tie_word_embeddings", arch in ("gemma", "gemma2")))
    result = ArchPlan(
        arch=arch,
        config=config,
        permute_qk=arch == "llama",
        norm_plus_one=arch in ("gemma", "gemma2"),
        tied=tied,
    )
    result.extra_tensors = _rope_tensors(result)
    return result


def _rope_tensors(p: ArchPlan) -> dict[str, np.ndarray]:
    scaling = rope_scaling(p.config)
    if scaling is None:
        return {}
    kind = scaling["rope_type"]
    if p.arch == "llama" and kind == "llama3":
        return {"rope_freqs.weight": _llama3_rope_factors(p, scaling)}
    if p.arch == "llama" and kind == "linear":
        return {}
    if p.arch == "phi3" and kind in ("longrope", "su"):
        half = _phi3_rope_dims(p) // 2
        long, short = scaling.get("long_factor"), scaling.get("short_factor")
        if not long or not short or len(long) != half or len(short) != half:
            raise ExportError(
                f"phi3 longrope factors must have {half} entries each; config.json is inconsistent"
            )
        return {
            "rope_factors_long.weight": np.asarray(long, dtype=np.float32),
            "rope_factors_short.weight": np.asarray(short, dtype=np.float32),
        }
    raise ExportError(
        f"rope scaling {kind!r} on {p.arch} is not supported by Forge's GGUF writer "
        "(supported: llama3 and linear on llama, longrope on phi3)"
    )


def _llama3_rope_factors(p: ArchPlan, scaling: dict[str, Any]) -> np.ndarray:
    """Llama 3.1+'s frequency-dependent rope scaling, as the rope_freqs tensor llama.cpp reads."""
    dim = p.head_dim
    freqs = 1.0 / (rope_theta(p.config) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _phi3_rope_dims(p: ArchPlan) -> int:
    return int(float(p.config.get("partial_rotary_factor", 1.0)) * p.head_dim)


def _common(p: ArchPlan, w: Any) -> None:
    c = p.config
    w.add_context_length(int(c["max_position_embeddings"]))
    w.add_embedding_length(int(c["hidden_size"]))
    w.add_block_count(int(c["num_hidden_layers"]))
    w.add_feed_forward_length(int(c["intermediate_size"]))
    w.add_head_count(p.n_head)
    w.add_head_count_kv(p.n_head_kv)
    w.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    w.add_rope_freq_base(rope_theta(c))
    w.add_vocab_size(int(c["vocab_size"]))


def _llama_like(p: ArchPlan, w: Any) -> None:
    import gguf

    _common(p, w)
    w.add_rope_dimension_count(p.head_dim)
    if p.head_dim != int(p.config["hidden_size"]) // p.n_head:
        w.add_key_length(p.head_dim)
        w.add_value_length(p.head_dim)
    scaling = rope_scaling(p.config)
    if scaling is not None and scaling["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(scaling["factor"]))


def _phi3(p: ArchPlan, w: Any) -> None:
    c = p.config
    _common(p, w)
    w.add_rope_dimension_count(_phi3_rope_dims(p))
    orig_ctx = int(c.get("original_max_position_embeddings") or c["max_position_embeddings"])
    w.add_rope_scaling_orig_ctx_len(orig_ctx)
    w.add_sliding_window(int(c.get("sliding_window") or 0))
    if "rope_factors_long.weight" in p.extra_tensors:
        scale = int(c["max_position_embeddings"]) / orig_ctx
        # the magnitude correction HF's Phi-3 longrope applies to cos/sin beyond the original context
        attn_factor = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(orig_ctx))
        w.add_rope_scaling_attn_factors(attn_factor)


def _gemma(p: ArchPlan, w: Any) -> None:
    _common(p, w)
    w.add_key_length(p.head_dim)
    w.add_value_length(p.head_dim)


def _gemma2(p: ArchPlan, w: Any) -> None:
    c = p.config
    _gemma(p, w)
    # llama.cpp scales queries by 1/sqrt(head_dim) for every Gemma 2 size but 27B; HF uses this scalar
    scalar = c.get("query_pre_attn_scalar")
    if scalar is not None and int(scalar) != p.head_dim:
        raise ExportError(
            f"gemma2 with query_pre_attn_scalar={scalar} != head_dim={p.head_dim} would be scaled "
            "differently by llama.cpp; Forge exports only Gemma 2 models where the two agree"
        )
    w.add_attn_logit_softcapping(float(c.get("attn_logit_softcapping") or 0.0))
    w.add_final_logit_softcapping(float(c.get("final_logit_softcapping") or 0.0))
    w.add_sliding_window(int(c.get("sliding_window") or 4096))


_HPARAMS: dict[str, Callable[[ArchPlan, Any], None]] = {
    "llama": _llama_like,
    "qwen2": _llama_like,
    "phi3": _phi3,
    "gemma": _gemma,
    "gemma2": _gemma2,
}


def layer_of(hf_name: str) -> int | None:
    m = _LAYER.search(hf_name)
    return int(m.group(1)) if m else None
