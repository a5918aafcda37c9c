"""Gemini through google-genai: JSON output constrained by the answer's schema, and our retry policy."""

from __future__ import annotations

from typing import Any

from google import genai
from google.genai import errors, types

from forged.brain.llm.base import BrainQuotaExhausted, BrainUnavailable, LLMBrain, one_line
from forged.brain.llm.retry import Retry, RetryPolicy, with_retries

DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"  # structured output with a JSON schema is documented on v1beta
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_KEY_REFUSED = ("API_KEY_INVALID", "API key not valid", "API_KEY_SERVICE_BLOCKED")


class GeminiBrain(LLMBrain):
    name = "gemini"

    def __init__(
        self,
        api_key: str,
        model: str = "",
        base_url: str = "",
        timeout_s: float = 60.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url or DEFAULT_URL
        super().__init__(model or DEFAULT_MODEL, self.base_url)
        self.policy = policy or RetryPolicy()
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=self.base_url,
                api_version=API_VERSION,
                timeout=max(1, round(timeout_s * 1000)),
                # One attempt: the SDK's tenacity loop would hide the server's RetryInfo from our policy.
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def _complete(self, system: str, prompt: str, schema: dict[str, Any]) -> str:
        config = types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_json_schema=schema,
            temperature=0.2,
        )
        what = f"Gemini at {self.base_url}"

        def once() -> str:
            try:
                response = self._client.models.generate_content(
                    model=self.model, contents=prompt, config=config
                )
            except errors.APIError as exc:
                raise self._mapped(exc) from None
            except Exception as exc:  # httpx(2) connect/timeout errors: the SDK does not wrap them
                raise BrainUnavailable(
                    f"cannot reach Gemini at {self.base_url}: {one_line(exc)}; check the network or use the "
                    "offline brain"
                ) from None
            # A blocked or empty candidate has no text: the answer check below asks again.
            return response.text or ""

        return with_retries(once, self.policy, what)

    def _mapped(self, exc: errors.APIError) -> Exception:
        details = _details(exc)
        message = one_line(exc.message or exc.status or "")
        if exc.code == 429:
            if _per_day(details):
                return BrainQuotaExhausted(
                    f"the Gemini API key's daily quota for {self.model} is used up ({message}); it resets at "
                    "midnight Pacific time: wait, use another key or model, or use the offline brain"
                )
            return Retry(f"429 {message}", _retry_delay(details))
        if exc.code in (500, 502, 503, 504):
            return Retry(f"{exc.code} {exc.status or ''} {message}".strip())
        if exc.code in (401, 403) or any(mark in str(exc.details) for mark in _KEY_REFUSED):
            return BrainUnavailable(
                f"Gemini refused the API key ({message}): store a valid one with `forgectl login`"
            )
        if exc.code == 404:
            return BrainUnavailable(
                f"Gemini has no model {self.model!r} ({message}): choose another with --brain-model"
            )
        return BrainUnavailable(f"Gemini rejected the request with {exc.code} {exc.status or ''}: {message}")


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    body = exc.details if isinstance(exc.details, dict) else {}
    found = body.get("error", body).get("details", [])
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """google.rpc.RetryInfo.retryDelay is a protobuf Duration in JSON: "2s", "0.5s", "41.234567s"."""
    for d in details:
        if d.get("@type") == _RETRY_INFO:
            raw = str(d.get("retryDelay", "")).strip()
            try:
                return max(0.0, float(raw.removesuffix("s")))
            except ValueError:
                return None
    return None


def _per_day(details: list[dict[str, Any]]) -> bool:
    for d in details:
        if d.get("@type") != _QUOTA_FAILURE:
            continue
        for v in d.get("violations", []):
            ids = f"{v.get('quotaId', '')} {v.get('quotaMetric', '')}".lower().replace("_", "")
            if "perday" in ids or "daily" in ids:
                return True
    return False
