"""The self-healing ladder, step by step (forged/queue/remedy.py)."""

from __future__ import annotations

from forged.queue.remedy import MAX_REMEDIES, diagnosis, remedy_for

TRAIN = {"micro_batch_size": 8, "grad_accum": 2, "learning_rate": 1e-3, "gradient_checkpointing": False}


def test_out_of_memory_ladder_keeps_the_effective_batch() -> None:
    first = remedy_for("oom", "out of memory at step 9", TRAIN, [])
    assert first is not None and first.outcome == "oom"
    assert (first.train["micro_batch_size"], first.train["grad_accum"]) == (4, 4)
    second = remedy_for("oom", "out of memory at step 9", first.train, ["oom"])
    assert second is not None and second.train["gradient_checkpointing"] is True
    assert second.train["micro_batch_size"] == 4
    third = remedy_for("oom", "out of memory at step 9", second.train, ["oom", "oom"])
    assert third is not None
    assert (third.train["micro_batch_size"], third.train["grad_accum"]) == (2, 8)


def test_an_odd_micro_batch_goes_to_its_largest_proper_divisor() -> None:
    cure = remedy_for("oom", "oom", {**TRAIN, "micro_batch_size": 6, "grad_accum": 1}, [])
    assert cure is not None and (cure.train["micro_batch_size"], cure.train["grad_accum"]) == (3, 2)
    cure = remedy_for("oom", "oom", {**TRAIN, "micro_batch_size": 5, "grad_accum": 1}, [])
    assert cure is not None and (cure.train["micro_batch_size"], cure.train["grad_accum"]) == (1, 5)


def test_nothing_left_at_micro_batch_1_with_checkpointing() -> None:
    spent = {**TRAIN, "micro_batch_size": 1, "gradient_checkpointing": True}
    assert remedy_for("oom", "oom", spent, ["oom"]) is None
    assert "smaller model" in diagnosis("oom", "out of memory", ["oom"])


def test_nan_halves_the_learning_rate_and_other_crashes_retry_as_they_were() -> None:
    cure = remedy_for("nan_loss", "loss became NaN at step 3", TRAIN, [])
    assert cure is not None and cure.outcome == "diverged" and cure.train["learning_rate"] == 5e-4
    again = remedy_for("crashed", "the runner was killed by SIGSEGV", TRAIN, [])
    assert again is not None and again.train == TRAIN


def test_bad_input_and_runner_bugs_are_not_retried_and_the_budget_is_bounded() -> None:
    assert remedy_for("bad_data", "no examples", TRAIN, []) is None
    assert remedy_for("internal", "KeyError in the runner", TRAIN, []) is None
    spent = ["oom", "diverged", "crashed", "oom"][:MAX_REMEDIES]
    assert remedy_for("crashed", "boom", TRAIN, spent) is None
    assert f"gave up after {MAX_REMEDIES} automatic retries" in diagnosis("crashed", "boom", spent)
