"""Unsloth's fused kernels for loading a model and attaching LoRA, used when they can be.

Unsloth is optional and CUDA-only (it needs Triton and pins its own torch), so the runner imports it only
after deciding to use it, and otherwise says in one log line why not and trains with transformers + PEFT.
The result is the same kind of model either way: a PEFT LoRA model whose adapter and checkpoints are
interchangeable, so a job may resume on a machine that has Unsloth from one that had not.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from runner_image.spec import HParams, ModelRef

# config.json model types Unsloth has fast paths for (of the catalog's families).
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})


def why_not(ref: ModelRef, device: torch.device) -> str | None:
    """Why Unsloth cannot train this model here, or None when it can."""
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed"
    if device.type != "cuda":
        return "unsloth needs CUDA"
    if ref.kind == "tiny" or ref.path is None:
        return "the built-in tiny model is built in memory, and unsloth loads from a model directory"
    model_type = _model_type(Path(ref.path))
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"unsloth does not support model type {model_type or 'unknown'!r}"
    return None


def load(
    ref: ModelRef, hp: HParams, dtype: torch.dtype, quantized: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (4-bit when `quantized`) and its tokenizer, through Unsloth's patched loader."""
    fast = _fast_language_model()
    model, tokenizer = fast.from_pretrained(
        model_name=ref.path,
        max_seq_length=hp.max_seq_len,
        dtype=dtype,
        load_in_4bit=quantized,
        local_files_only=True,
    )
    return model, tokenizer


def attach_lora(model: PreTrainedModel, lora: LoraConfig, hp: HParams) -> PeftModel:
    peft_model: PeftModel = _fast_language_model().get_peft_model(
        model,
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=sorted(lora.target_modules),
        bias="none",
        use_gradient_checkpointing="unsloth" if hp.gradient_checkpointing else False,
        random_state=hp.seed,
    )
    return peft_model


def _fast_language_model() -> Any:
    # Imported by name so that the runner image (which does not ship Unsloth) never needs it.
    return importlib.import_module("unsloth").FastLanguageModel


def _model_type(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None
