"""Built-in pipeline-check models: random weights at a real architecture, with the family's real tokenizer.

`tiny` (also `tiny-smollm`) is a small Llama with SmolLM2-135M-Instruct's tokenizer and ChatML template.
`tiny-<family>` for every other family is the family's real config.json (shipped in assets/<family>/) with its
sizes scaled down (hidden 64, 2 layers, 4 heads, the same grouped-query ratio, a 64-token sliding window
where the family has one) and every quirk kept: Llama 3's rope scaling, Qwen2's q/k/v biases, Phi-3's fused
qkv and gate_up projections, Gemma's 1+w norms and scaled embeddings, Gemma 2's soft-capping, sliding-window
layers and pre/post norms. The vocabulary is the real, full one. Gemma and Gemma 2 use a stand-in tokenizer
(runner_image/standin_tokenizer.py) because Gemma's real one is not available here; their warning says so.

Weights come from a fixed seed in well under a second, so no weights ship; only tokenizers do. The models
learn whatever they are trained on and know nothing else, which is exactly what a test of the pipeline needs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from runner_image.data import ensure_pad_token
from runner_image.tiny_tokenizers import ASSETS_ROOT, FAMILIES, asset_dir, check_family, load_tokenizer

__all__ = [
    "ASSETS",
    "FAMILIES",
    "PIPELINE_CHECK_WARNING",
    "build_model",
    "build_tiny_model",
    "load_tiny_tokenizer",
    "load_tokenizer",
    "pipeline_check_warning",
    "save_tiny",
    "tiny_name",
]

ASSETS = asset_dir("smollm")
TINY_SEED = 20240601
# With the standard init (embeddings ~ N(0, 0.02), final RMSNorm weight 1) no hidden state can give any token
# a logit above ~2.6 (|h| = sqrt(hidden) after the norm, |e| ~ 0.23), so LoRA alone could barely move the loss
# off ln(vocab). Scaling the final norm lifts that ceiling while keeping the initial logits near uniform
# (first loss ~12 rather than ln(49152) ~ 10.8): at lr 2e-4 the loss then falls several nats in ~100 steps.
FINAL_NORM_WEIGHT = 8.0
# The other families get the final-norm scale that gives the same initial logit spread as `tiny`
# (std = weight * sqrt(hidden) * initializer_range), whatever their hidden size and init range.
_LOGIT_STD = FINAL_NORM_WEIGHT * math.sqrt(128) * 0.02
# Gemma's RMSNorm multiplies by (1 + weight), so its weight is one less for the same scale.
_ONE_PLUS_W_NORMS = frozenset({"gemma", "gemma2"})
STANDIN_TOKENIZER = frozenset({"gemma", "gemma2"})

TINY_HIDDEN, TINY_LAYERS, TINY_HEADS, TINY_WINDOW = 64, 2, 4, 64

PIPELINE_CHECK_WARNING = (
    "model 'tiny' is a pipeline check: random weights that learn the training data but know nothing else; "
    "use a real base model for anything you want to talk to"
)


def tiny_name(family: str) -> str:
    """The name a user types (and an adapter records as its base): `tiny` for smollm, else tiny-<family>."""
    return "tiny" if check_family(family) == "smollm" else f"tiny-{family}"


def pipeline_check_warning(family: str = "smollm") -> str:
    name = tiny_name(family)
    warning = PIPELINE_CHECK_WARNING.replace("model 'tiny'", f"model '{name}'")
    if family in STANDIN_TOKENIZER:
        warning += (
            f"; {name} also uses a stand-in tokenizer (Gemma's real one is not shipped): its text splits "
            "differently from Gemma's, though the special tokens and chat template are Gemma's"
        )
    return warning


def load_tiny_tokenizer() -> PreTrainedTokenizerBase:
    return load_tokenizer("smollm")


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def real_config(family: str) -> dict[str, Any]:
    """The family's real config.json, as shipped (for smollm: none; `tiny` predates the families)."""
    return json.loads((ASSETS_ROOT / check_family(family) / "model_config.json").read_text(encoding="utf-8"))


def family_config(family: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    """The real config with its sizes scaled down; everything else (rope, biases, capping, ids) is kept."""
    if check_family(family) == "smollm":
        return tiny_config(tokenizer)
    cfg = real_config(family)
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = TINY_HIDDEN // TINY_HEADS
    mlp_ratio = cfg["intermediate_size"] / cfg["hidden_size"]
    scaled: dict[str, Any] = {
        "hidden_size": TINY_HIDDEN,
        # Keep the MLP's width ratio (Gemma's 8x differs from Llama's ~2.7x), rounded to a multiple of 16.
        "intermediate_size": 16 * max(1, round(mlp_ratio * TINY_HIDDEN / 16)),
        "num_hidden_layers": TINY_LAYERS,
        "num_attention_heads": TINY_HEADS,
        "num_key_value_heads": max(1, TINY_HEADS * kv_heads // heads),
    }
    if "head_dim" in cfg:
        scaled["head_dim"] = head_dim
    if "query_pre_attn_scalar" in cfg:  # Gemma 2 scales attention by head_dim ** -0.5 through this
        scaled["query_pre_attn_scalar"] = head_dim
    if cfg.get("sliding_window"):
        scaled["sliding_window"] = TINY_WINDOW
    if cfg.get("hidden_act") == "gelu" and cfg["model_type"] == "gemma":
        # What transformers substitutes anyway (with a warning): Gemma was trained with tanh-GELU.
        scaled["hidden_activation"] = "gelu_pytorch_tanh"
    if tokenizer.pad_token_id is not None:
        scaled["pad_token_id"] = tokenizer.pad_token_id
    for key in ("architectures", "auto_map", "_name_or_path", "torch_dtype", "transformers_version"):
        cfg.pop(key, None)
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **(cfg | scaled))


def build_model(family: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The family's tiny model in fp32: the same weights every time, in any process; the caller's RNG state is
    left untouched."""
    config = family_config(family, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        norm = model.get_decoder().norm
        if family == "smollm":
            weight = FINAL_NORM_WEIGHT
        else:
            weight = _LOGIT_STD / (math.sqrt(config.hidden_size) * config.initializer_range)
            weight -= 1.0 if family in _ONE_PLUS_W_NORMS else 0.0
        with torch.no_grad():
            norm.weight.fill_(weight)
    model.config.name_or_path = "forge-tiny" if family == "smollm" else f"forge-{tiny_name(family)}"
    return model.float()


def build_tiny_model(tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    return build_model("smollm", tokenizer)


def save_tiny(out: str | Path, family: str = "smollm") -> Path:
    """Write a tiny model and its tokenizer (with chat template) as an ordinary Hugging Face directory."""
    out_dir = Path(out).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(family)
    # The same pad token the runner picks, so that training from this directory matches training the built-in.
    ensure_pad_token(tokenizer)
    model = build_model(family, tokenizer)
    ensure_pad_token(tokenizer, model)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
