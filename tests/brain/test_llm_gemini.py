"""The Gemini brain against a loopback server speaking generateContent's real wire format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import gemini as G
from fakes.gemini import GeminiFake
from pydantic import BaseModel, Field

from forged.brain.llm import BrainAnswerInvalid, BrainQuotaExhausted, BrainUnavailable
from forged.brain.llm.gemini import GeminiBrain
from forged.brain.llm.retry import RetryPolicy


class Verdict(BaseModel):
    label: str
    score: int = Field(ge=0, le=10)


GOOD = '{"label": "support", "score": 7}'


@pytest.fixture(scope="module")
def fake() -> Iterator[GeminiFake]:
    with GeminiFake() as server:
        yield server


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def brain(fake: GeminiFake, sleeps: Sleeps | None = None, model: str = "") -> GeminiBrain:
    policy = RetryPolicy(
        attempts=3, base_delay=0.5, max_delay=4.0, sleep=sleeps if sleeps is not None else Sleeps()
    )
    return GeminiBrain("AIza-test-key", model=model, base_url=fake.url, timeout_s=10, policy=policy)


def test_valid_json_is_validated_and_the_request_carries_model_key_and_schema(fake: GeminiFake) -> None:
    fake.answer(G.text(GOOD))
    answer = brain(fake, model="gemini-2.5-pro").ask("be brief", "classify this", Verdict)

    assert answer == Verdict(label="support", score=7)
    (req,) = fake.received
    assert GeminiFake.model_of(req) == "gemini-2.5-pro"
    assert req.headers["x-goog-api-key"] == "AIza-test-key"
    config = req.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Verdict.model_json_schema()
    assert req.body["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert GeminiFake.prompt_of(req) == "classify this"


def test_the_model_name_defaults_to_a_configurable_one(fake: GeminiFake) -> None:
    fake.answer(G.text(GOOD))
    brain(fake).ask("s", "p", Verdict)
    assert GeminiFake.model_of(fake.received[0]) == "gemini-2.5-flash"


@pytest.mark.parametrize(
    "wrapped",
    [
        f"```json\n{GOOD}\n```",
        f"Here is the JSON you asked for:\n```\n{GOOD}\n```\nLet me know!",
        f"Sure! {GOOD} Hope this helps.",
    ],
)
def test_json_in_a_code_fence_or_in_prose_is_unwrapped(fake: GeminiFake, wrapped: str) -> None:
    fake.answer(G.text(wrapped))
    assert brain(fake).ask("s", "p", Verdict).score == 7
    assert len(fake.received) == 1


def test_malformed_json_gets_one_reask_that_quotes_the_problem(fake: GeminiFake) -> None:
    fake.answer(G.text('{"label": "support", "score": 7'), G.text(GOOD))
    assert brain(fake).ask("s", "classify", Verdict).label == "support"

    first, second = fake.received
    assert GeminiFake.prompt_of(first) == "classify"
    reask = GeminiFake.prompt_of(second)
    assert reask.startswith("classify") and "not valid JSON" in reask


def test_schema_violations_twice_give_answer_invalid(fake: GeminiFake) -> None:
    fake.answer(G.text('{"label": "x", "score": 99}'), G.text('{"label": 3}'))
    with pytest.raises(BrainAnswerInvalid) as err:
        brain(fake).ask("s", "p", Verdict)

    assert len(fake.received) == 2
    assert "score" in GeminiFake.prompt_of(fake.received[1])  # the re-ask named the violated field
    message = str(err.value)
    assert "\n" not in message and "gemini" in message and "label" in message


def test_a_429_with_retry_info_waits_exactly_the_servers_delay(fake: GeminiFake) -> None:
    sleeps = Sleeps()
    fake.answer(G.retry_after("2s"), G.retry_after("0.25s"), G.text(GOOD))
    assert brain(fake, sleeps).ask("s", "p", Verdict).score == 7
    assert sleeps == [2.0, 0.25]
    assert len(fake.received) == 3


def test_a_per_day_quota_is_fatal_at_once_with_a_clear_message(fake: GeminiFake) -> None:
    sleeps = Sleeps()
    fake.answer(G.per_day_quota())
    with pytest.raises(BrainQuotaExhausted) as err:
        brain(fake, sleeps).ask("s", "p", Verdict)

    assert sleeps == [] and len(fake.received) == 1
    assert "daily quota" in str(err.value) and "offline" in str(err.value)


def test_a_500_then_success_backs_off_once(fake: GeminiFake) -> None:
    sleeps = Sleeps()
    fake.answer(G.server_error(500), G.text(GOOD))
    assert brain(fake, sleeps).ask("s", "p", Verdict).score == 7
    assert sleeps == [0.5]


def test_5xx_forever_backs_off_exponentially_then_is_unavailable(fake: GeminiFake) -> None:
    sleeps = Sleeps()
    fake.answer(then=G.server_error(503))
    with pytest.raises(BrainUnavailable) as err:
        brain(fake, sleeps).ask("s", "p", Verdict)

    assert sleeps == [0.5, 1.0]  # three tries in all: the SDK retried nothing on its own
    assert len(fake.received) == 3
    assert "503" in str(err.value) and "offline" in str(err.value)


def test_a_refused_key_is_unavailable_and_says_how_to_fix_it(fake: GeminiFake) -> None:
    fake.answer(G.bad_key())
    with pytest.raises(BrainUnavailable, match="forgectl login"):
        brain(fake).ask("s", "p", Verdict)
    assert len(fake.received) == 1


def test_connection_refused_is_unavailable_and_names_the_url() -> None:
    with GeminiFake() as gone:
        url = gone.url
    policy = RetryPolicy(sleep=Sleeps())
    dead = GeminiBrain("k", base_url=url, timeout_s=5, policy=policy)
    with pytest.raises(BrainUnavailable) as err:
        dead.ask("s", "p", Verdict)
    assert url in str(err.value)


def test_a_hanging_server_is_bounded_by_the_timeout(fake: GeminiFake) -> None:
    fake.answer(G.hang(5))
    slow = GeminiBrain("k", base_url=fake.url, timeout_s=1, policy=RetryPolicy(attempts=1))
    with pytest.raises(BrainUnavailable, match="cannot reach Gemini"):
        slow.ask("s", "p", Verdict)
