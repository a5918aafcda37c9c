"""The local (OpenAI-compatible) brain against a loopback /v1/chat/completions server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import openai_compat as O
from fakes.openai_compat import OpenAICompatFake
from pydantic import BaseModel, Field

from forged.brain.llm import BrainAnswerInvalid, BrainUnavailable
from forged.brain.llm.openai_compat import LocalBrain
from forged.brain.llm.retry import RetryPolicy


class Verdict(BaseModel):
    label: str
    score: int = Field(ge=0, le=10)


GOOD = '{"label": "support", "score": 7}'


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAICompatFake]:
    with OpenAICompatFake() as server:
        yield server


def brain(fake: OpenAICompatFake, sleeps: Sleeps | None = None, key: str = "") -> LocalBrain:
    policy = RetryPolicy(attempts=3, base_delay=0.5, sleep=sleeps if sleeps is not None else Sleeps())
    return LocalBrain(fake.base_url, model="qwen2.5:7b", api_key=key, timeout_s=10, policy=policy)


def test_the_request_asks_for_the_schema_and_the_answer_is_validated(fake: OpenAICompatFake) -> None:
    fake.answer(O.text(GOOD))
    assert brain(fake, key="sk-local").ask("be brief", "classify", Verdict) == Verdict(
        label="support", score=7
    )

    (req,) = fake.received
    assert req.body["model"] == "qwen2.5:7b"
    assert req.headers["authorization"] == "Bearer sk-local"
    fmt = req.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == Verdict.model_json_schema()
    assert req.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "classify"},
    ]


def test_a_fenced_answer_is_unwrapped_and_a_malformed_one_reasked_once(fake: OpenAICompatFake) -> None:
    fake.answer(O.text("```json\n{oops}\n```"), O.text(f"```json\n{GOOD}\n```"))
    assert brain(fake).ask("s", "classify", Verdict).score == 7
    assert "not valid JSON" in OpenAICompatFake.user_prompt(fake.received[1])


def test_schema_violations_twice_give_answer_invalid(fake: OpenAICompatFake) -> None:
    fake.answer(O.text('{"label": "x"}'), O.text('{"label": "x", "score": -1}'))
    with pytest.raises(BrainAnswerInvalid, match="local"):
        brain(fake).ask("s", "p", Verdict)


def test_a_429_honours_retry_after(fake: OpenAICompatFake) -> None:
    sleeps = Sleeps()
    fake.answer(O.rate_limited("3"), O.text(GOOD))
    assert brain(fake, sleeps).ask("s", "p", Verdict).score == 7
    assert sleeps == [3.0]


def test_a_500_then_success_and_500_forever(fake: OpenAICompatFake) -> None:
    sleeps = Sleeps()
    fake.answer(O.server_error(), O.text(GOOD))
    assert brain(fake, sleeps).ask("s", "p", Verdict).score == 7
    assert sleeps == [0.5]

    sleeps.clear()
    fake.answer(then=O.server_error())
    with pytest.raises(BrainUnavailable, match="after 3 tries"):
        brain(fake, sleeps).ask("s", "p", Verdict)
    assert sleeps == [0.5, 1.0] and len(fake.received) == 3


def test_a_missing_model_says_how_to_pull_it(fake: OpenAICompatFake) -> None:
    fake.answer(O.model_missing("qwen2.5:7b"))
    with pytest.raises(BrainUnavailable, match=r"ollama pull qwen2\.5:7b"):
        brain(fake).ask("s", "p", Verdict)


def test_connection_refused_names_the_endpoint() -> None:
    with OpenAICompatFake() as gone:
        url = gone.base_url
    with pytest.raises(BrainUnavailable) as err:
        LocalBrain(url, timeout_s=5, policy=RetryPolicy(sleep=Sleeps())).ask("s", "p", Verdict)
    assert url in str(err.value) and "\n" not in str(err.value)
