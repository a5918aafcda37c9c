"""An LLM brain's plan, checked by the offline planner's safety rules before anything uses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import gemini as G
from fakes.gemini import GeminiFake
from forge.catalog import GIB

from forged.brain import llm_plan
from forged.brain.llm.gemini import GeminiBrain
from forged.brain.llm.retry import RetryPolicy
from forged.brain.llm_plan import GpuRoom

STATS = {
    "train_examples": 900,
    "val_examples": 100,
    "chars_p95": 900,
    "chars_max": 2400,
    "tokens_p99": 300,
    "layout": "instruction/input/output",
}
NO_GPU = GpuRoom(None, cuda=False)


def answer(**changes: Any) -> str:
    picks: dict[str, Any] = {
        "model": "qwen2.5-1.5b",
        "lora_rank": 16,
        "lora_alpha": 32,
        "learning_rate": 2e-4,
        "epochs": 3,
        "micro_batch_size": 8,
        "max_seq_len": 320,
    }
    picks.update(changes)
    return json.dumps({k: {"value": v, "reason": f"because {k}"} for k, v in picks.items()})


@pytest.fixture(scope="module")
def fake() -> Iterator[GeminiFake]:
    with GeminiFake() as server:
        yield server


def brain(fake: GeminiFake) -> GeminiBrain:
    return GeminiBrain(
        "k", base_url=fake.url, timeout_s=10, policy=RetryPolicy(attempts=2, sleep=lambda _s: None)
    )


def reasons(plan: llm_plan.Plan) -> dict[str, str]:
    return {d.field: d.reason for d in plan.decisions}


def test_the_brains_plan_is_used_and_each_decision_says_who_decided(fake: GeminiFake) -> None:
    fake.answer(G.text(answer()))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)

    assert plan.brain == "gemini"
    assert (plan.spec["model"], plan.spec["epochs"], plan.spec["max_seq_len"]) == ("qwen2.5-1.5b", 3, 320)
    why = reasons(plan)
    assert why["model"] == "gemini: because model"
    assert why["seed"].startswith("fixed seed")  # the brain did not decide it: the offline rule did
    # What the brain saw: the goal, the stats and the catalog, never a data sample.
    prompt = GeminiFake.prompt_of(fake.received[0])
    assert "a support bot" in prompt and '"tokens_p99": 300' in prompt and "llama-3.2-1b" in prompt
    assert fake.received[0].body["generationConfig"]["responseJsonSchema"] == (
        llm_plan.PlanAnswer.model_json_schema()
    )


def test_the_smollm_rule_caps_a_small_models_rate_and_rank_and_says_so(fake: GeminiFake) -> None:
    fake.answer(G.text(answer(model="smollm2-135m", learning_rate=5e-4, lora_rank=32)))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)

    assert (plan.spec["learning_rate"], plan.spec["lora_rank"]) == (1e-4, 4)
    why = reasons(plan)
    assert why["learning_rate"].startswith("gemini suggested 0.0005, capped at 0.0001 by the PRD SmolLM")
    assert why["lora_rank"].startswith("gemini suggested 32, capped at 4")


def test_a_model_outside_the_catalog_is_not_used(fake: GeminiFake) -> None:
    fake.answer(G.text(answer(model="gpt-4o")))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)

    assert plan.spec["model"] == "tiny"
    assert "gemini suggested 'gpt-4o', which is not in forge's catalog" in reasons(plan)["model"]
    assert plan.brain == "gemini"  # its other values passed the checks


def test_sequence_length_stays_within_the_datas_p99_and_the_models_context(fake: GeminiFake) -> None:
    fake.answer(G.text(answer(model="smollm-135m", max_seq_len=8192)))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)
    assert plan.spec["max_seq_len"] == 320
    assert "capped at smollm-135m's context of 2048" in reasons(plan)["max_seq_len"]
    assert "capped at 320: 99% of examples are at most 300 tokens" in reasons(plan)["max_seq_len"]


def test_the_model_must_fit_the_free_gpu_memory(fake: GeminiFake) -> None:
    fake.answer(G.text(answer(model="qwen2.5-7b")))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), GpuRoom(3 * GIB, cuda=True))
    assert plan.spec["model"] != "qwen2.5-7b", "the offline rules' choice, which fits, stands"
    assert "does not fit the 3.0 GiB free" in reasons(plan)["model"]

    fake.answer(G.text(answer(model="llama-3.2-1b", micro_batch_size=256, max_seq_len=320)))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), GpuRoom(12 * GIB, cuda=True))
    assert plan.spec["model"] == "llama-3.2-1b"
    assert plan.spec["micro_batch_size"] < 256
    assert "lowered to" in reasons(plan)["micro_batch_size"]
    assert plan.memory_bytes <= 12 * GIB * (1 - llm_plan.VRAM_HEADROOM)


def test_the_users_settings_always_win(fake: GeminiFake) -> None:
    fake.answer(G.text(answer(model="qwen2.5-1.5b", epochs=3)))
    plan = llm_plan.plan("a support bot", STATS, {"model": "llama-3.2-1b", "epochs": 5}, brain(fake), NO_GPU)
    assert (plan.spec["model"], plan.spec["epochs"]) == ("llama-3.2-1b", 5)
    assert reasons(plan)["model"] == reasons(plan)["epochs"] == "set by you"
    assert reasons(plan)["lora_rank"] == "gemini: because lora_rank"


def test_a_failing_brain_gives_the_offline_plan_and_says_why(fake: GeminiFake) -> None:
    fake.answer(then=G.server_error(503))
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)
    assert plan.brain == "offline" and plan.spec["model"] == "tiny"
    note = reasons(plan)["brain"]
    assert note.startswith("the offline rules decided: ") and "503" in note

    fake.answer(G.per_day_quota())
    plan = llm_plan.plan("a support bot", STATS, {}, brain(fake), NO_GPU)
    assert plan.brain == "offline" and "daily quota" in reasons(plan)["brain"]
