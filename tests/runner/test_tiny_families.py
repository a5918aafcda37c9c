"""tiny-<family>: each family's pipeline-check model has the real architecture, tokenizer and template, and
LoRA on the family's target modules can fit data on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from runner_testlib import run_runner, write_spec
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from runner_image import standin_tokenizer
from runner_image.data import ensure_pad_token
from runner_image.errors import RunnerError
from runner_image.lora_targets import lora_targets
from runner_image.spec import parse_spec
from runner_image.tiny import (
    FAMILIES,
    build_model,
    load_tokenizer,
    pipeline_check_warning,
    save_tiny,
)
from runner_image.tiny_tokenizers import tokenizer_dir

CONVERSATION = [
    {"role": "user", "content": "Where is my order 4417?"},
    {"role": "assistant", "content": "It shipped on Monday; tracking code ZX-91."},
]
# What only the family's real template writes before the assistant's answer.
ASSISTANT_MARKER = {
    "smollm": "<|im_start|>assistant\n",
    "tinyllama": "<|assistant|>\n",
    "llama": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen": "<|im_start|>assistant\n",
    "phi": "<|assistant|>\n",
    "gemma": "<start_of_turn>model\n",
    "gemma2": "<start_of_turn>model\n",
    "mistral": "[/INST] ",
}


def _check_architecture(family: str, model: PreTrainedModel) -> None:
    cfg = model.config
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    expected_class = {
        "qwen": "Qwen2ForCausalLM",
        "phi": "Phi3ForCausalLM",
        "gemma": "GemmaForCausalLM",
        "gemma2": "Gemma2ForCausalLM",
        "mistral": "MistralForCausalLM",
    }.get(family, "LlamaForCausalLM")
    assert type(model).__name__ == expected_class
    real_vocab = {"llama": 128_256, "qwen": 151_936, "phi": 32_064, "gemma": 256_000, "gemma2": 256_000}
    assert cfg.vocab_size == real_vocab.get(family, cfg.vocab_size)
    if family == "llama":
        assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.rope_parameters["factor"] == 32.0
    if family == "qwen":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
        assert model.model.layers[0].self_attn.o_proj.bias is None
    if family == "phi":
        assert {"qkv_proj", "gate_up_proj"} <= names and "q_proj" not in names
    if family == "gemma2":
        assert cfg.final_logit_softcapping == 30.0 and cfg.attn_logit_softcapping == 50.0
        assert cfg.sliding_window == 64 and "sliding_attention" in cfg.layer_types
        assert "post_feedforward_layernorm" in names


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_renders_and_learns_with_lora(family: str) -> None:
    tokenizer = load_tokenizer(family)
    text = "Refund 19.99 EUR to Zoë — order #4417 😀"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text

    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert CONVERSATION[0]["content"] in rendered
    assert ASSISTANT_MARKER[family] + CONVERSATION[1]["content"] in rendered

    ensure_pad_token(tokenizer)
    model = build_model(family, tokenizer)
    assert not ensure_pad_token(tokenizer, model)  # a spare pad token: the real shapes are kept
    _check_architecture(family, model)

    targets = lora_targets(model.config.model_type)
    # LoRA's A matrices are drawn from the global RNG: seeded, so the result does not depend on which tests
    # ran before (at lr 1e-2 an unlucky draw overshoots on the fourth step).
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    wrapped = {name.rsplit(".", 2)[-2] for name, _ in peft_model.named_modules() if name.endswith("lora_A")}
    assert wrapped == set(targets)
    batch = torch.tensor([tokenizer.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]])
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        loss = peft_model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses  # random weights: LoRA fits a repeated example fast


def test_weights_are_the_same_in_every_build() -> None:
    tokenizer = load_tokenizer("phi")
    first, second = build_model("phi", tokenizer), build_model("phi", tokenizer)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_gemma_standin_tokenizer_is_what_its_generator_trains(tmp_path: Path) -> None:
    standin_tokenizer.main([str(tmp_path)])
    shipped = standin_tokenizer.GEMMA_ASSETS / "tokenizer.json"
    assert (tmp_path / "tokenizer.json").read_bytes() == shipped.read_bytes()
    tokenizer = load_tokenizer("gemma")
    assert [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id] == [0, 1, 2]
    assert tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [106, 107]
    assert tokenizer("hi")["input_ids"][0] == 2  # add_bos, like Gemma
    assert "stand-in tokenizer" in pipeline_check_warning("gemma2")
    assert "stand-in" not in pipeline_check_warning("qwen")


def test_packed_tokenizer_unpacks_once_into_the_xdg_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = tokenizer_dir("tinyllama")
    assert first.parent == tmp_path / "forge" / "tokenizers"
    assert {p.name for p in first.parent.iterdir()} == {first.name}  # no staging directory left behind
    mtime = (first / "tokenizer.json").stat().st_mtime_ns
    assert tokenizer_dir("tinyllama") == first and (first / "tokenizer.json").stat().st_mtime_ns == mtime
    assert AutoTokenizer.from_pretrained(str(first)).chat_template


def test_save_tiny_writes_an_ordinary_hf_directory(tmp_path: Path) -> None:
    out = save_tiny(tmp_path / "tiny-phi", family="phi")
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "Phi3ForCausalLM" and "<|assistant|>" in tokenizer.chat_template
    reference = build_model("phi", tokenizer)
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)


def test_runner_trains_a_tiny_family_end_to_end(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, model={"kind": "tiny", "family": "phi"}, max_steps=4, epochs=1)
    result = run_runner("run", "--spec", str(spec), cwd=tmp_path)
    assert result.rc == 0, result.stderr
    warnings = [e["message"] for e in result.of("log") if e["level"] == "warning"]
    assert any("model 'tiny-phi' is a pipeline check" in w for w in warnings)
    assert [e["step"] for e in result.of("step")][-1] == 4
    adapter = tmp_path / "output" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert set(config["target_modules"]) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"kind": "tiny", "family": "gpt"}, "unknown tiny family 'gpt': use one of smollm, tinyllama"),
        ({"kind": "path", "path": "/m", "family": "qwen"}, 'model.family is only for model.kind "tiny"'),
    ],
)
def test_spec_rejects_a_bad_family(model: dict[str, str], needle: str) -> None:
    spec = {"job_id": "j", "model": model, "train_file": "t", "output_dir": "o", "checkpoint_dir": "c"}
    with pytest.raises(RunnerError, match=re.escape(needle)) as info:
        parse_spec(spec)
    assert info.value.code == "bad_spec"
