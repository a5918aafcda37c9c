"""The offline rules pick the model the PRD maps the goal to, within the GPU memory forged reports."""

from forge.catalog import GIB

from forged.brain.planner import plan

STATS = {"train_examples": 800, "val_examples": 80, "chars_p95": 900, "chars_max": 2000}


def model_and_reason(
    goal: str, free_gib: float | None, cuda: bool = True, **stats: object
) -> tuple[str, str]:
    free = int(free_gib * GIB) if free_gib is not None else None
    planned = plan(goal, {**STATS, **stats}, cuda=cuda, free_vram=free)
    return planned.spec["model"], planned.decision("model").reason


def test_the_prds_use_case_mapping_on_a_24_gib_gpu() -> None:
    assert model_and_reason("Make a customer support bot for our online store", 24)[0] == "qwen2.5-3b"
    assert model_and_reason("Turn questions into SQL queries", 24)[0] == "llama-3.2-3b"
    assert model_and_reason("A small assistant that runs on a Raspberry Pi", 24)[0] == "smollm2-1.7b"


def test_a_smaller_gpu_gets_the_largest_model_of_the_use_case_that_fits() -> None:
    roomy, _ = model_and_reason("customer support replies", 24)
    tight, reason = model_and_reason("customer support replies", 8)
    assert (roomy, tight) == ("qwen2.5-3b", "qwen2.5-1.5b")
    assert "the largest that fits" in reason and "8.0 GiB free" in reason
    tiny_gpu, reason = model_and_reason("customer support replies", 2.5)
    assert tiny_gpu.startswith("smollm2") and "none of qwen2.5-3b, qwen2.5-1.5b, qwen2.5-0.5b fits" in reason


def test_non_english_data_prefers_the_multilingual_family() -> None:
    model, reason = model_and_reason("Write SQL for our analysts", 24, languages=["de", "en"])
    assert model.startswith("qwen2.5") and "partly de" in reason


def test_without_a_gpu_the_pipeline_check_and_what_a_gpu_would_get() -> None:
    model, reason = model_and_reason("Make a customer support bot", None, cuda=False)
    assert model == "tiny"
    assert "no NVIDIA GPU" in reason and "qwen2.5-3b" in reason and "--model qwen" in reason


def test_the_users_model_always_wins() -> None:
    planned = plan("customer support", STATS, {"model": "phi"}, cuda=True, free_vram=80 * GIB)
    assert planned.spec["model"] == "phi"
