"""A GGUF of every seed family behaves in real llama.cpp like the HF model it came from, and the gate notices
when it does not (a wrong tensor layout, a missing stop token, an unmerged adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forged.export import gguf_arch
from forged.export.gguf_writer import convert
from forged.export.parity import verify
from runner_image.tiny import FAMILIES

# A short validation-style chat: plain words, digits, punctuation, newlines, non-ASCII; the gate cuts it
# before the assistant turn.
PROMPTS = [
    [
        {"role": "user", "content": "List 1, 2, 3 and 42 apples.\n\n  Then say  Ünïcødé ✓ 日本語?"},
        {"role": "assistant", "content": "Apples."},
    ]
]


@pytest.mark.parametrize("out_type", ["f16", "q8_0"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_passes_the_gate(
    tiny_models: dict[str, Path], tmp_path: Path, family: str, out_type: str
) -> None:
    hf_dir = tiny_models[family]
    gguf_path = convert(hf_dir, tmp_path / f"{family}.gguf", out_type)
    report = verify(hf_dir, gguf_path, PROMPTS, out_type)
    assert report.passed, report.report
    (check,) = report.prompts
    assert check.tokens_match and not check.leaked
    if out_type == "f16":
        # Token for token, except at most one near-tie (HF rates both choices within 2x the tolerance).
        assert check.greedy_same and len(check.greedy_ties) <= 1 and len(check.greedy_hf) >= 4
    assert report.end_of_turn_stops is True


def test_unpermuted_qk_fails_the_gate(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: llama's q/k rows left in HF's rotate-half order."""
    hf_dir = tiny_models["smollm"]
    monkeypatch.setattr(gguf_arch, "permute_qk", lambda weights, n_head: weights)
    gguf_path = convert(hf_dir, tmp_path / "unpermuted.gguf", "f16")
    report = verify(hf_dir, gguf_path, PROMPTS, "f16")
    assert not report.passed
    assert "log-probabilities differ" in report.report, report.report
    assert report.prompts[0].tokens_match  # the tokenizer is fine: the gate names the weights, not it


def test_merged_lora_matches_the_adapter_and_the_base_does_not(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tiny_models["smollm"]
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]
    )
    torch.manual_seed(0)
    # init_lora_weights=False draws B at random too: an adapter that has moved, as after training
    peft_model = get_peft_model(model, LoraConfig(**{**lora.to_dict(), "init_lora_weights": False}))
    ids = tokenizer.apply_chat_template(PROMPTS[0][:1], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        adapter_logits = peft_model(ids).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 0.5  # the adapter really changes the model
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)

    merged_dir = tmp_path / "merged"
    merged.save_pretrained(str(merged_dir))
    tokenizer.save_pretrained(str(merged_dir))
    merged_gguf = convert(merged_dir, tmp_path / "merged.gguf", "f16")
    report = verify(merged_dir, merged_gguf, PROMPTS, "f16")
    assert report.passed, report.report
    base_gguf = convert(base_dir, tmp_path / "base.gguf", "f16")
    assert not verify(merged_dir, base_gguf, PROMPTS, "f16").passed


def test_checkpoint_with_unmerged_adapter_tensors_is_refused(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file, save_file

    src = tiny_models["smollm"]
    bad = tmp_path / "unmerged"
    bad.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "model.safetensors"))
    q = tensors["model.layers.0.self_attn.q_proj.weight"]
    tensors["model.layers.0.self_attn.q_proj.lora_A.weight"] = q[:4].copy()
    save_file(tensors, str(bad / "model.safetensors"))
    from forged.export.errors import ExportError

    with pytest.raises(ExportError, match="merge LoRA adapters"):
        convert(bad, tmp_path / "x.gguf", "f16")
    assert not list(tmp_path.glob("x.gguf*"))


def test_a_users_tinyllama_directory_trains_merges_and_serves_the_same_tokens(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A TinyLlama-1.1B-Chat directory as its authors publish it (tokenizer_config: LlamaTokenizer, "legacy":
    false; tokenizer.json: the Prepend normalizer), trained on, merged and exported as a user's would be: the
    runner, the merged model's tokenizer and llama.cpp all tokenize as the tokenizer.json says."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from runner_image.merge import merge_adapter
    from runner_image.spec import MergeSpec, ModelRef
    from runner_image.tiny_tokenizers import tokenizer_dir
    from runner_image.train import load_base

    user_dir = tmp_path / "TinyLlama-1.1B-Chat-v1.0"
    shutil.copytree(tokenizer_dir("tinyllama"), user_dir)  # the original tokenizer files, unchanged
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copyfile(tiny_models["tinyllama"] / name, user_dir / name)
    ref = ModelRef(kind="path", path=str(user_dir))

    model, tokenizer, _ = load_base(ref, None)
    text = tokenizer.apply_chat_template(PROMPTS[0][:1], tokenize=False, add_generation_prompt=True)
    as_written = Tokenizer.from_file(str(user_dir / "tokenizer.json")).encode(text, add_special_tokens=False)
    assert "</s>" in text and tokenizer(text, add_special_tokens=False)["input_ids"] == as_written.ids

    # An adapter that has moved, saved as the trainer saves it (with the runner's tokenizer).
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(model, lora).save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    merged = merge_adapter(
        MergeSpec(job_id="j-user", model=ref, adapter_dir=str(adapter), output_dir=str(tmp_path / "merged"))
    )
    # Anyone loading the merged model with plain transformers gets the same tokens too.
    reloaded = AutoTokenizer.from_pretrained(str(merged), local_files_only=True)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == as_written.ids

    gguf_path = convert(merged, tmp_path / "tinyllama-user.gguf", "f16")
    report = verify(merged, gguf_path, PROMPTS, "f16")
    assert report.passed, report.report


def test_a_near_tie_is_not_a_greedy_difference_but_a_clear_preference_is() -> None:
    from forged.export.parity import PromptCheck

    base = {"index": 0, "n_tokens": 5, "tokens_match": True, "max_logprob_diff": 0.004, "leaked": []}
    tie = PromptCheck(**base, greedy_hf=[1, 2, 3], greedy_gguf=[1, 2, 4], greedy_ties=[2])
    real = PromptCheck(**base, greedy_hf=[1, 2, 3], greedy_gguf=[1, 2, 4], greedy_ties=[])
    assert tie.greedy_same and not real.greedy_same
