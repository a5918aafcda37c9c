"""The built-in `tiny` model: a random-weight Llama with a real tokenizer, to check the pipeline end to end.

It is built from a fixed seed in well under a second, so no weights ship with the package; only the tokenizer
does (SmolLM2-135M-Instruct's, Apache-2.0: a Llama-family vocabulary with a ChatML chat template). It learns
whatever it is trained on, but knows nothing else, which is exactly what a test of the pipeline needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from runner_image.data import ensure_pad_token

ASSETS = Path(__file__).parent / "assets" / "tiny"
TINY_SEED = 20240601
# With the standard init (embeddings ~ N(0, 0.02), final RMSNorm weight 1) no hidden state can give any token
# a logit above ~2.6 (|h| = sqrt(hidden) after the norm, |e| ~ 0.23), so LoRA alone could barely move the loss
# off ln(vocab). Scaling the final norm lifts that ceiling while keeping the initial logits near uniform
# (first loss ~12 rather than ln(49152) ~ 10.8): at lr 2e-4 the loss then falls several nats in ~100 steps.
FINAL_NORM_WEIGHT = 8.0

PIPELINE_CHECK_WARNING = (
    "model 'tiny' is a pipeline check: random weights that learn the training data but know nothing else; "
    "use a real base model for anything you want to talk to"
)


def load_tiny_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(ASSETS), local_files_only=True)


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


def build_tiny_model(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """The same weights every time, in any process; the caller's RNG state is left untouched."""
    config = tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.model.norm.weight.fill_(FINAL_NORM_WEIGHT)
    model.config.name_or_path = "forge-tiny"
    return model.float()


def save_tiny(out: str | Path) -> Path:
    """Write the tiny model and its tokenizer as an ordinary Hugging Face directory (for export and tests)."""
    out_dir = Path(out).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tiny_tokenizer()
    # The same pad token the runner picks, so that training from this directory matches training `tiny`.
    ensure_pad_token(tokenizer)
    model = build_tiny_model(tokenizer)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
