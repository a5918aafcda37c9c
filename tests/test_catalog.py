"""The model catalog (protos/forge/catalog.yaml): completeness, lookups, defaults and the VRAM formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from forge.catalog import CATALOG_FILE, GIB, CatalogError, estimate_vram, load_catalog, tiny_family

# The seed list: every family and size, by canonical name.
SEED_MODELS = {
    "smollm-135m",
    "smollm-360m",
    "smollm-1.7b",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
    "tinyllama-1.1b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "llama-3.1-8b",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "qwen2.5-7b",
    "phi-3-mini",
    "gemma-2b",
    "gemma-7b",
    "gemma-2-2b",
    "gemma-2-9b",
    "mistral-7b-v0.3",
}
# The PRD's "Available Models" table: `--model X` means this model.
PRD_FLAGS = {
    "smollm": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "tinyllama": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "llama": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen": "Qwen/Qwen2.5-3B-Instruct",
    "phi": "microsoft/Phi-3-mini-4k-instruct",
    "gemma": "google/gemma-2-2b-it",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
}


def test_every_seed_model_is_catalogued_with_a_valid_family() -> None:
    catalog = load_catalog()
    assert {m.name for m in catalog.models} == SEED_MODELS
    for model in catalog.models:
        family = catalog.family(model.family)
        assert family.lora_targets and family.chat_template and family.architecture.endswith("ForCausalLM")
        assert model.context_length >= 2048


@pytest.mark.parametrize(("flag", "repo"), sorted(PRD_FLAGS.items()))
def test_prd_short_names_and_repo_ids_resolve(flag: str, repo: str) -> None:
    catalog = load_catalog()
    model = catalog.find_model(flag)
    assert model is not None and model.repo == repo
    assert catalog.find_model(repo.upper()) == model
    assert catalog.find_model(model.name) == model


def test_unknown_names_and_base_models() -> None:
    catalog = load_catalog()
    assert catalog.find_model("gpt-5") is None
    # A base (non-instruct) repo of a catalogued model still has a known size: Qwen's "0.5B" is under 500M.
    assert catalog.known_params("Qwen/Qwen2.5-0.5B") == 494_032_768
    assert catalog.known_params("gpt2-medium") == 355_000_000  # the longest prefix wins over "gpt2"
    assert catalog.known_params("someone/unknown-model") is None


def test_tiny_names() -> None:
    assert tiny_family("tiny") == "smollm"
    assert tiny_family(" Tiny-Qwen ") == "qwen"
    assert tiny_family("tiny-gemma2") == "gemma2"
    assert tiny_family("tiny-gpt") is None and tiny_family("qwen") is None
    assert set(load_catalog().families) == {
        "smollm",
        "tinyllama",
        "llama",
        "qwen",
        "phi",
        "gemma",
        "gemma2",
        "mistral",
    }
    stand_ins = {k for k, f in load_catalog().families.items() if f.tiny.tokenizer == "stand-in"}
    assert stand_ins == {"gemma", "gemma2"}


def test_size_class_defaults_follow_the_prd_small_model_rule() -> None:
    catalog = load_catalog()
    small = catalog.size_class(catalog.find_model("smollm2-135m").params)  # type: ignore[union-attr]
    assert (small.learning_rate, small.lora_rank, small.precision) == (1e-4, 4, "bf16")
    assert catalog.size_class(catalog.find_model("qwen2.5-0.5b").params).name == "small"  # type: ignore[union-attr]
    assert catalog.size_class(catalog.find_model("qwen").params).name == "medium"  # type: ignore[union-attr]
    large = catalog.size_class(catalog.find_model("mistral").params)  # type: ignore[union-attr]
    assert large.method == "qlora" and large.lora_rank == 16


def test_vram_llama_3_2_1b_lora_matches_the_hand_computation() -> None:
    """docs/model-catalog.md, example 1: rank 16, 512 tokens x micro-batch 4."""
    catalog = load_catalog()
    est = catalog.estimate_vram(catalog.find_model("llama-3.2-1b"), "lora")  # type: ignore[arg-type]
    assert est.weights == 2 * 1_235_814_400
    # q 4096 + k 2560 + v 2560 + o 4096 + gate 10240 + up 10240 + down 10240 = 44032 per rank and layer
    assert est.adapter == 16 * (16 * 16 * 44_032)
    # 2048 tokens x (16 layers x 2 x 54272 + 10 x 128256)
    assert est.activations == 2048 * (16 * 2 * 54_272 + 10 * 128_256) == 6_183_452_672
    assert est.total == 10_524_286_566
    assert round(est.total_gib, 2) == 9.80


def test_vram_with_gradient_checkpointing_keeps_each_layers_input_and_one_layer() -> None:
    """Example 1 again, checkpointed: 16 layer inputs of 2 x 2048 bytes plus one layer's 108,544."""
    catalog = load_catalog()
    model = catalog.find_model("llama-3.2-1b")
    assert model is not None
    full = catalog.estimate_vram(model, "lora")
    est = estimate_vram(
        model.shape,
        catalog.families[model.family].lora_targets,
        "lora",
        rank=16,
        seq_len=512,
        micro_batch=4,
        assumptions=catalog.vram,
        params=model.params,
        gradient_checkpointing=True,
    )
    assert est.activations == 2048 * (16 * 2 * 2048 + 108_544 + 10 * 128_256) == 2_983_198_720
    assert (est.weights, est.adapter) == (full.weights, full.adapter)


def test_vram_mistral_7b_qlora_matches_the_hand_computation() -> None:
    """docs/model-catalog.md, example 2: NF4 blocks, 16-bit embedding and head, rank 16."""
    catalog = load_catalog()
    est = catalog.estimate_vram(catalog.find_model("mistral"))  # type: ignore[arg-type]
    assert est.method == "qlora"  # the large class's method
    embed = 2 * 32_768 * 4_096
    assert est.weights == 2 * embed + round((7_248_023_552 - embed) * 4.126953125 / 8) == 4_137_425_025
    assert est.adapter == 16 * 41_943_040
    assert est.activations == 2048 * (32 * 200_704 + 10 * 32_768)
    assert est.total == 21_301_539_982
    # 4-bit weights must be what makes a 7B model cheaper than LoRA in 16 bits.
    assert catalog.estimate_vram(catalog.find_model("mistral"), "lora").total > est.total + 9 * GIB  # type: ignore[arg-type]


def test_a_broken_catalog_is_rejected_naming_the_entry(tmp_path: Path) -> None:
    raw = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    qwen = next(m for m in raw["models"] if m["name"] == "qwen2.5-3b")
    qwen["shape"]["layers"] = 35  # a typo: 36 is right
    broken = tmp_path / "catalog.yaml"
    broken.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"qwen2\.5-3b: shape gives .* parameters, not 3,085,938,688"):
        load_catalog(broken)
