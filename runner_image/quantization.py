"""QLoRA: the frozen base model in 4-bit NF4 (bitsandbytes), the LoRA adapter trained on top of it.

NF4 with double quantization (the QLoRA paper's recipe) stores a weight in about 4.13 bits, so a 7-9B model
fits a 24 GB card; matmuls dequantize to the compute dtype (bf16, or fp16 on GPUs older than Ampere). Only
the base is quantized: the adapter stays fp32, and export (merge.py) rebuilds the base un-quantized, so the
merged model is not rounded to 4 bits.
"""

from __future__ import annotations

import tempfile

import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from runner_image import qlora_support
from runner_image.errors import RunnerError


def require_support(device: torch.device) -> None:
    """Fail at once, before any model is loaded, where 4-bit training cannot run."""
    missing = qlora_support.missing(lambda: device.type == "cuda")
    if missing:
        raise RunnerError(
            "qlora_unavailable",
            "QLoRA needs an NVIDIA GPU and bitsandbytes: use method lora",
            hint=f"here {missing}; method lora trains the same adapter on full-precision weights",
        )


def load_quantized(model_dir: str, compute_dtype: torch.dtype) -> PreTrainedModel:
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    # bitsandbytes quantizes while loading, straight onto the GPU; a 4-bit model cannot be moved after.
    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        local_files_only=True,
        quantization_config=config,
        dtype=compute_dtype,
        device_map={"": torch.cuda.current_device()},
    )


def quantize_built(model: PreTrainedModel, compute_dtype: torch.dtype) -> PreTrainedModel:
    """A model built in memory (the tiny pipeline check) quantized the way a loaded one is: via a save."""
    with tempfile.TemporaryDirectory(prefix="forge-qlora-") as tmp:
        model.save_pretrained(tmp)
        return load_quantized(tmp, compute_dtype)


def prepare(model: PreTrainedModel) -> PreTrainedModel:
    """Freeze the 4-bit base and keep its norms and embeddings in fp32 for stable training (PEFT's QLoRA
    preparation). Gradient checkpointing stays the caller's choice, as for plain LoRA."""
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False))
