"""The self-healing ladder, step by step (forged/queue/remedy.py)."""

from __future__ import annotations

from collections.abc import Callable

from forged.queue.remedy import MAX_REMEDIES, diagnosis, on_cpu, remedy_for

TRAIN = {"micro_batch_size": 8, "grad_accum": 2, "learning_rate": 1e-3, "gradient_checkpointing": False}


def on_a_capable_gpu() -> str:
    return ""


def _climb(train: dict, qlora_missing: Callable[[], str]) -> list:  # type: ignore[type-arg]
    """Every rung the out-of-memory ladder offers a job that keeps running out of memory."""
    rungs, previous = [], []
    while (cure := remedy_for("oom", "out of memory at step 9", train, previous, qlora_missing)) is not None:
        rungs.append(cure)
        previous.append(cure.outcome)
        train = cure.train
    return rungs


def test_out_of_memory_ladder_on_a_gpu() -> None:
    rungs = _climb(TRAIN, on_a_capable_gpu)
    assert all(r.outcome == "oom" for r in rungs) and len(rungs) == MAX_REMEDIES
    halved, checkpointing, capped, four_bit, halved_again, last = (r.train for r in rungs)
    # 1: half the micro-batch, the same effective batch.
    assert (halved["micro_batch_size"], halved["grad_accum"]) == (4, 4)
    assert "same effective batch 16" in rungs[0].reason
    # 2: gradient checkpointing; 3: a sequence cap at the data's 99th percentile; 4: 4-bit base weights.
    assert checkpointing["gradient_checkpointing"] is True and checkpointing["micro_batch_size"] == 4
    assert capped["seq_cap_percentile"] == 99 and "99th percentile" in rungs[2].reason
    assert four_bit["method"] == "qlora" and "4-bit" in rungs[3].reason
    # Then smaller micro-batches, each rung keeping what the earlier ones turned on.
    assert (halved_again["micro_batch_size"], halved_again["grad_accum"]) == (2, 8)
    assert last["micro_batch_size"] == 1 and last["method"] == "qlora" and last["seq_cap_percentile"] == 99
    assert remedy_for("oom", "oom", last, [], on_a_capable_gpu) is None


def test_on_the_cpu_the_ladder_skips_4_bit_and_says_why() -> None:
    rungs = _climb(TRAIN, on_cpu)
    assert all(r.train.get("method") != "qlora" for r in rungs)
    assert [r.train["micro_batch_size"] for r in rungs] == [4, 4, 4, 2, 1]
    assert "4-bit base weights (QLoRA) were not tried: they need an NVIDIA GPU" in rungs[3].reason
    final = diagnosis("oom", "out of memory", ["oom"] * len(rungs))
    assert "4-bit base weights (QLoRA) were not tried" in final and "smaller model" in final
    # A job already on 4-bit has nothing to skip.
    assert "not tried" not in _climb({**TRAIN, "method": "qlora"}, on_cpu)[-1].reason


def test_on_a_gpu_without_bitsandbytes_the_ladder_asks_once_it_gets_there_skips_4_bit_and_says_why() -> None:
    asked: list[int] = []
    why = "bitsandbytes is not installed where the runner runs (the runner image forge:hopper)"

    def no_bitsandbytes() -> str:
        asked.append(1)
        return why

    first = remedy_for("oom", "out of memory", TRAIN, [], no_bitsandbytes)
    assert first is not None and not asked, "the first rungs need no answer, which may cost a container"
    rungs = _climb(TRAIN, no_bitsandbytes)
    assert all(r.train.get("method") != "qlora" for r in rungs)
    assert f"4-bit base weights (QLoRA) were not tried: {why}" in rungs[3].reason
    final = diagnosis("oom", "out of memory", ["oom"] * len(rungs), no_bitsandbytes)
    assert f"were not tried: {why}" in final and "on 4-bit weights" not in final


def test_an_odd_micro_batch_goes_to_its_largest_proper_divisor() -> None:
    cure = remedy_for("oom", "oom", {**TRAIN, "micro_batch_size": 6, "grad_accum": 1}, [])
    assert cure is not None and (cure.train["micro_batch_size"], cure.train["grad_accum"]) == (3, 2)
    cure = remedy_for("oom", "oom", {**TRAIN, "micro_batch_size": 5, "grad_accum": 1}, [])
    assert cure is not None and (cure.train["micro_batch_size"], cure.train["grad_accum"]) == (1, 5)


def test_nothing_left_at_micro_batch_1_with_checkpointing_and_a_cap() -> None:
    spent = {**TRAIN, "micro_batch_size": 1, "gradient_checkpointing": True, "seq_cap_percentile": 99}
    assert remedy_for("oom", "oom", spent, ["oom"]) is None
    assert "smaller model" in diagnosis("oom", "out of memory", ["oom"])


def test_nan_halves_the_learning_rate_and_other_crashes_retry_as_they_were() -> None:
    cure = remedy_for("nan_loss", "loss became NaN at step 3", TRAIN, [])
    assert cure is not None and cure.outcome == "diverged" and cure.train["learning_rate"] == 5e-4
    assert "no_fp16" not in cure.train, "not under fp16: the precision stays"
    again = remedy_for("crashed", "the runner was killed by SIGSEGV", TRAIN, [])
    assert again is not None and again.train == TRAIN


def test_bad_input_and_runner_bugs_are_not_retried_and_the_budget_is_bounded() -> None:
    assert remedy_for("bad_data", "no examples", TRAIN, []) is None
    assert remedy_for("internal", "KeyError in the runner", TRAIN, []) is None
    spent = (["oom", "diverged", "crashed"] * MAX_REMEDIES)[:MAX_REMEDIES]
    assert remedy_for("crashed", "boom", TRAIN, spent) is None
    assert f"gave up after {MAX_REMEDIES} automatic retries" in diagnosis("crashed", "boom", spent)


def test_nan_under_fp16_also_leaves_fp16() -> None:
    cure = remedy_for("nan_loss_fp16", "loss became NaN or infinite at step 3 under fp16", TRAIN, [])
    assert cure is not None and cure.outcome == "diverged"
    assert cure.train["learning_rate"] == 5e-4 and cure.train["no_fp16"] is True
    assert "learning rate 0.0005 (was 0.001) and bf16 instead of fp16" in cure.reason
    # Once off fp16 only the learning rate is left to lower; at its floor, leaving fp16 alone still helps.
    again = remedy_for("nan_loss_fp16", "NaN", cure.train, ["diverged"])
    assert again is not None and "fp16" not in again.reason
    floor = {**TRAIN, "learning_rate": 1e-7}
    only_precision = remedy_for("nan_loss_fp16", "NaN", floor, [])
    assert only_precision is not None and only_precision.train["learning_rate"] == 1e-7
    assert remedy_for("nan_loss_fp16", "NaN", {**floor, "no_fp16": True}, []) is None
