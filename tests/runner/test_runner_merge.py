"""`python -m runner_image merge`: the adapter folded into the base is the same model the PeftModel is."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from runner_testlib import RunResult, check_event_shape, run_runner
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from runner_image.tiny import build_tiny_model


def _random_adapter(tokenizer: PreTrainedTokenizerBase, out: Path) -> PeftModel:
    """A LoRA whose B matrices are not zero (as after training), saved the way the trainer saves it."""
    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(build_tiny_model(tokenizer), lora)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return model.eval()


def _merge(workspace: Path, adapter: Path, out: Path) -> RunResult:
    spec = workspace / "merge.json"
    body = {"job_id": "j-m", "model": {"kind": "tiny"}, "adapter_dir": str(adapter), "output_dir": str(out)}
    spec.write_text(json.dumps(body))
    return run_runner("merge", "--spec", str(spec), cwd=workspace)


def test_merge_writes_a_plain_hf_model_with_the_peft_models_logits(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerBase
) -> None:
    peft_model = _random_adapter(tiny_tokenizer, tmp_path / "adapter")
    done = _merge(tmp_path, tmp_path / "adapter", tmp_path / "merged")

    assert done.rc == 0, done.stderr
    kinds = [check_event_shape(e) for e in done.events]
    assert ("artifact", {"name": "merged", "path": str(tmp_path / "merged")}) in kinds
    merged_dir = tmp_path / "merged"
    assert (merged_dir / "model.safetensors").is_file()
    assert not list(merged_dir.glob("adapter_*")), "a merged model, not an adapter"
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir), local_files_only=True)
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    assert tokenizer.pad_token_id == tiny_tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Where is my order?"}],
                                         tokenize=False, add_generation_prompt=True)  # fmt: skip
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        base = build_tiny_model(tiny_tokenizer)(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(got, base, atol=1e-2), "the adapter changed nothing: the test proves nothing"


def test_merge_of_something_that_is_not_an_adapter_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = _merge(tmp_path, tmp_path / "empty", tmp_path / "out")

    assert done.rc == 2
    errors = [e["error"] for e in done.events if "error" in e]
    assert errors and errors[-1]["code"] == "bad_adapter" and "adapter_config.json" in errors[-1]["message"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
