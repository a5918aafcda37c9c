"""Which brain answers a request: the caller's BrainChoice, else forged's configured default, with the
caller's key. None means the offline rules.

The backends are imported on first use: google-genai and openai each add about a second and 50 MB to a
process, which forged's start time and idle memory cannot afford when no LLM brain is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from forged.brain.llm.base import BrainError, BrainUnavailable, LLMBrain
from forged.brain.llm.keys import KeyStore
from forged.brain.llm.retry import RetryPolicy

OFFLINE = "offline"
KINDS = (OFFLINE, "gemini", "local")


class ChoiceLike(Protocol):
    """forge.v1.BrainChoice, or anything with its three fields."""

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def endpoint(self) -> str: ...


class BrainChoiceError(ValueError):
    """A BrainChoice that names no brain; str() lists the ones there are."""


@dataclass(frozen=True)
class BrainDefaults:
    """forged's configuration: the brain a request without a choice gets, and where each backend lives."""

    kind: str = OFFLINE
    model: str = ""
    endpoint: str = ""  # local: the OpenAI-compatible base URL
    gemini_url: str = ""  # tests and proxies; empty: Google's endpoint
    timeout_s: float = 60.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # Base URLs a caller's BrainChoice may name besides `endpoint` ("*": any). Without this list any user of
    # a shared box could make forged send requests to an address of their choosing (SSRF).
    allowed_endpoints: frozenset[str] = frozenset()

    def endpoint_allowed(self, endpoint: str) -> bool:
        from forged.brain.llm.openai_compat import DEFAULT_ENDPOINT

        url = endpoint.strip().rstrip("/")
        allowed = {e.strip().rstrip("/") for e in self.allowed_endpoints}
        return "*" in allowed or url in allowed | {(self.endpoint or DEFAULT_ENDPOINT).rstrip("/")}


class _Ping(BaseModel):
    ok: bool


class BrainSelector:
    def __init__(self, keys: KeyStore, defaults: BrainDefaults | None = None) -> None:
        self.keys = keys
        self.defaults = defaults or BrainDefaults()

    def kind_of(self, choice: ChoiceLike | None) -> str:
        kind = ((choice.kind if choice is not None else "") or self.defaults.kind).strip().lower()
        if kind not in KINDS:
            raise BrainChoiceError(f"no brain {kind!r}: use {', '.join(KINDS)}")
        return kind

    def brain_for(
        self, choice: ChoiceLike | None, user: str, timeout_s: float | None = None
    ) -> LLMBrain | None:
        """The brain to ask, or None for the offline rules. Raises BrainUnavailable when the chosen brain
        cannot be used at all (no key), so the caller can fall back and say why."""
        kind = self.kind_of(choice)
        if kind == OFFLINE:
            return None
        same_as_default = kind == self.defaults.kind
        model = (choice.model if choice is not None else "") or (
            self.defaults.model if same_as_default else ""
        )
        timeout = timeout_s if timeout_s is not None else self.defaults.timeout_s
        found = self.keys.get(user, kind)
        if kind == "gemini":
            from forged.brain.llm.gemini import GeminiBrain

            if found is None:
                raise BrainUnavailable(
                    "no Gemini API key: store one with `forgectl login` (or set GEMINI_API_KEY for forged)"
                )
            return GeminiBrain(
                found[0],
                model=model.strip(),
                base_url=self.defaults.gemini_url,
                timeout_s=timeout,
                policy=self.defaults.policy,
            )
        from forged.brain.llm.openai_compat import LocalBrain

        chosen = (choice.endpoint if choice is not None else "").strip()
        if chosen and not self.defaults.endpoint_allowed(chosen):
            raise BrainChoiceError(
                f"forged does not send brain requests to {chosen}: use its own endpoint, or ask its admin to "
                "add yours with `forged --allow-brain-endpoint URL`"
            )
        endpoint = chosen or (self.defaults.endpoint if same_as_default else "")
        return LocalBrain(
            endpoint=endpoint.strip(),
            model=model.strip(),
            api_key=found[0] if found else "",
            timeout_s=timeout,
            policy=self.defaults.policy,
        )

    def check(self, choice: ChoiceLike | None, user: str) -> tuple[bool, str, str]:
        """(ok, brain, one-line message) after one small real request to the chosen brain."""
        kind = self.kind_of(choice)
        try:
            brain = self.brain_for(choice, user)
            if brain is None:
                return True, OFFLINE, "the offline rules: no network and no key needed"
            brain.ask(
                "You are a health check. Answer with JSON only.",
                'Reply with exactly {"ok": true}.',
                _Ping,
            )
        except BrainError as exc:
            return False, kind, str(exc)
        return True, brain.name, f"{brain.describe()} answered at {brain.address}"
