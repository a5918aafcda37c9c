"""Which linear layers get LoRA adapters: the catalog's choice for the model's architecture."""

from __future__ import annotations

from forge.catalog import load_catalog

# Architectures the catalog does not list: the Llama-style projection names most decoders share.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_targets(model_type: str) -> list[str]:
    """Target module names for a config.json `model_type` (Phi-3's fused qkv_proj/gate_up_proj included)."""
    return list(load_catalog().lora_targets_for(model_type) or DEFAULT_TARGETS)
