"""Fold a LoRA adapter into its base model: one ordinary Hugging Face directory that any tool can load.

The base is rebuilt exactly as training built it (`train.load_base`: same weights, same pad token, the same
seeded row when the vocabulary had to grow), always un-quantized, so a QLoRA-style run merges into full
precision weights rather than into rounded ones. The merge itself runs in fp32; only the saved copy is cast.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoConfig, PreTrainedModel

from runner_image import events
from runner_image.errors import RunnerError
from runner_image.hf_tokenizer import load_pretrained_tokenizer
from runner_image.spec import MergeSpec, ModelRef

# What the directory was made from, next to the weights (`forgectl inference --compare-base` reads it).
MERGE_INFO = "forge_merge.json"


def save_dtype(ref: ModelRef) -> torch.dtype:
    """16-bit for real models: the checkpoint's own half type, else bf16 (fp16 can overflow weights trained in
    bf16). The built-in tiny model stays fp32: it is a 25 MB pipeline check, and keeping it exact lets the
    GGUF parity gate and the tests compare logits without a rounding allowance."""
    if ref.kind == "tiny":
        return torch.float32
    assert ref.path is not None
    declared = getattr(AutoConfig.from_pretrained(ref.path, local_files_only=True), "dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if declared in (torch.float16, torch.bfloat16) else torch.bfloat16


def merge_adapter(spec: MergeSpec) -> Path:
    """Write base + adapter as safetensors with the tokenizer and its chat template; returns the directory."""
    from runner_image.train import load_base  # the exact base training used, pad token and all

    adapter = Path(spec.adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise RunnerError(
            "bad_adapter",
            f"{adapter} is not a LoRA adapter directory (no adapter_config.json)",
            hint="export a job whose training succeeded; its adapter artifact is the directory to merge",
        )
    events.log(f"merging the adapter {adapter} into the base model")
    model, _base_tokenizer, vocab_grew = load_base(spec.model, None)
    # The adapter's tokenizer is the one training saved: the same vocabulary, pad token and chat template.
    tokenizer = load_pretrained_tokenizer(adapter)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise RunnerError(
            "bad_adapter",
            f"the adapter's tokenizer has {len(tokenizer)} tokens but the base model only {rows}",
            hint="the adapter was trained on a different base model than this job's",
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (ValueError, RuntimeError, OSError) as e:
        raise RunnerError("bad_adapter", f"cannot load the adapter {adapter} onto the base: {e}") from e
    merged: PreTrainedModel = peft_model.merge_and_unload()
    dtype = save_dtype(spec.model)
    merged = merged.to(dtype)
    merged.config.pad_token_id = tokenizer.pad_token_id
    if not tokenizer.chat_template:
        raise RunnerError("no_chat_template", f"the adapter's tokenizer in {adapter} has no chat template")

    out = Path(spec.output_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / MERGE_INFO).write_text(
        json.dumps(
            {
                "base_model": spec.model.model_dump(),
                "adapter": str(adapter),
                "dtype": str(dtype).removeprefix("torch."),
                "vocab_grew": vocab_grew,
            },
            indent=2,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    events.artifact("merged", str(out))
    return out
