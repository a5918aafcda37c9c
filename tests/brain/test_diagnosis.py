"""Diagnosis of a failed job: the offline rules, and an LLM brain that is checked and bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fakes import gemini as G
from fakes.gemini import GeminiFake

from forged.brain import diagnosis
from forged.brain.llm.gemini import GeminiBrain
from forged.brain.llm.retry import RetryPolicy


@pytest.fixture(scope="module")
def fake() -> Iterator[GeminiFake]:
    with GeminiFake() as server:
        yield server


def gemini(fake: GeminiFake, timeout_s: float = 10) -> GeminiBrain:
    return GeminiBrain("k", base_url=fake.url, timeout_s=timeout_s, policy=RetryPolicy(attempts=1))


@pytest.mark.parametrize(
    ("code", "error", "logs", "cause", "fix"),
    [
        ("oom", "CUDA out of memory. Tried to allocate 2.00 GiB", [], "out of memory", "micro_batch_size"),
        ("nan_loss", "loss is nan at step 12", [], "diverged", "learning_rate"),
        ("bad_data", "train.jsonl line 3: not valid JSON", [], "training data", "forgectl study"),
        ("model", "model 'Qwen/Qwen2.5-3B' is not in the local cache and the hub cannot be reached", [],
         "could not be downloaded", "huggingface-cli download"),
        ("internal", "OSError: [Errno 28] No space left on device", [], "disk", "free space"),
        ("crashed", "the runner exited with status 1",
         ["saving checkpoint", "OSError: No space left on device"], "disk", "free space"),
        ("crashed", "the runner was killed by SIGTERM", [], "killed by a signal", "journalctl"),
        ("crashed", "the runner exited with status 139", [], "no specific rule", "forgectl logs"),
    ],
)  # fmt: skip
def test_offline_rules_name_the_cause_and_a_fix(
    code: str, error: str, logs: list[str], cause: str, fix: str
) -> None:
    found = diagnosis.diagnose(code, error, logs, [], brain=None)
    assert found.brain == "offline"
    assert cause in found.cause.lower() and fix.lower() in found.fix.lower()
    assert "\n" not in found.text()


def test_remedies_already_tried_are_mentioned() -> None:
    found = diagnosis.offline("oom", "out of memory", [], ["oom: micro-batch 2", "oom: checkpointing"])
    assert "retried 2 times" in found.cause


def test_the_brains_answer_is_used_and_sees_the_evidence_redacted(fake: GeminiFake) -> None:
    fake.answer(G.text('{"cause": "Row 3 has no assistant turn.", "fix": "Drop row 3 and prepare again."}'))
    found = diagnosis.diagnose(
        "bad_data",
        "row 3: no assistant turn",
        ["reading rows", "row 3 from ana@example.com"],
        [],
        gemini(fake),
    )
    assert (found.brain, found.cause, found.fix) == (
        "gemini", "Row 3 has no assistant turn.", "Drop row 3 and prepare again."
    )  # fmt: skip
    prompt = GeminiFake.prompt_of(fake.received[0])
    assert "row 3: no assistant turn" in prompt and "bad_data" in prompt
    assert "ana@example.com" not in prompt


def test_an_unusable_answer_falls_back_to_the_rules(fake: GeminiFake) -> None:
    fake.answer(G.text('{"cause": ""}'), G.text("I think it is the data."))
    found = diagnosis.diagnose("nan_loss", "loss is nan", [], [], gemini(fake))
    assert found.brain == "offline" and "diverged" in found.cause


def test_a_hanging_brain_is_bounded_by_the_timeout(fake: GeminiFake) -> None:
    fake.answer(G.hang(20))
    started = time.monotonic()
    found = diagnosis.diagnose("oom", "out of memory", [], [], gemini(fake, timeout_s=30), timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert found.brain == "offline" and "out of memory" in found.cause
