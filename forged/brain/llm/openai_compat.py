"""A local LLM through any OpenAI-compatible endpoint (Ollama's /v1, vLLM, llama.cpp's server), for users
whose data may not leave the building: the same JSON-schema answers and retry policy as Gemini."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai

from forged.brain.llm.base import BrainUnavailable, LLMBrain, one_line
from forged.brain.llm.retry import Retry, RetryPolicy, with_retries

DEFAULT_ENDPOINT = "http://127.0.0.1:11434/v1"  # Ollama
DEFAULT_MODEL = "qwen2.5:7b"
# Ollama and most local servers ignore the key, but the client insists on one.
_NO_KEY = "no-key"


class LocalBrain(LLMBrain):
    name = "local"

    def __init__(
        self,
        endpoint: str = "",
        model: str = "",
        api_key: str = "",
        timeout_s: float = 120.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        super().__init__(model or DEFAULT_MODEL, self.endpoint)
        self.policy = policy or RetryPolicy()
        # max_retries=0: the client's own backoff would hide Retry-After from our policy.
        self._client = openai.OpenAI(
            base_url=self.endpoint, api_key=api_key or _NO_KEY, max_retries=0, timeout=timeout_s
        )

    def _complete(self, system: str, prompt: str, schema: dict[str, Any]) -> str:
        def once() -> str:
            try:
                reply = self._client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": schema.get("title", "answer"), "schema": schema},
                    },
                    temperature=0.2,
                )
            except openai.APIConnectionError as exc:  # refused, DNS, or timed out
                raise BrainUnavailable(
                    f"cannot reach the local LLM at {self.endpoint}: {one_line(exc)}; start it (e.g. `ollama "
                    "serve`) or use the offline brain"
                ) from None
            except openai.APIStatusError as exc:
                raise self._mapped(exc) from None
            if not reply.choices:
                return ""
            return reply.choices[0].message.content or ""

        return with_retries(once, self.policy, f"the local LLM at {self.endpoint}")

    def _mapped(self, exc: openai.APIStatusError) -> Exception:
        message = one_line(_message(exc))
        if exc.status_code == 429:
            return Retry(f"429 {message}", _retry_after(exc.response.headers.get("retry-after")))
        if exc.status_code >= 500:
            return Retry(f"{exc.status_code} {message}")
        if exc.status_code in (401, 403):
            return BrainUnavailable(
                f"the local LLM at {self.endpoint} refused the key ({message}): "
                "store one with `forgectl login`"
            )
        if exc.status_code == 404:
            return BrainUnavailable(
                f"the local LLM at {self.endpoint} has no model {self.model!r} ({message}): pull it (`ollama "
                f"pull {self.model}`) or choose another with --brain-model"
            )
        return BrainUnavailable(f"the local LLM at {self.endpoint} rejected the request: {message}")


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


def _retry_after(value: str | None) -> float | None:
    """Retry-After is seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
