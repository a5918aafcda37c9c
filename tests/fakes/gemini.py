"""A loopback Gemini API (generativelanguage.googleapis.com v1beta) for tests: `generateContent` only.

Replies are the documented wire format: a `GenerateContentResponse` with candidates, and errors as the
`{"error": {"code", "message", "status", "details"}}` body of Google APIs, whose details carry typed
`google.rpc.RetryInfo` / `google.rpc.QuotaFailure` messages.
"""

from __future__ import annotations

import re
from typing import Any

from fakes.scripted_http import Received, Reply, ScriptedServer

DEFAULT_MODEL = "gemini-2.5-flash"
_FREE_TIER_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_PATH = re.compile(r"^/v1beta/models/(?P<model>[\w.-]+):generateContent$")


def text(answer: str) -> Reply:
    """A model turn whose only part is `answer` (the JSON text, when JSON output was asked for)."""
    return Reply(
        200,
        {
            "candidates": [
                {
                    "content": {"parts": [{"text": answer}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 17, "totalTokenCount": 59},
            "modelVersion": DEFAULT_MODEL,
            "responseId": "fake-response",
        },
    )


def error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> Reply:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        body["details"] = details
    return Reply(code, {"error": body})


def retry_after(delay: str) -> Reply:
    """A per-minute rate limit: RESOURCE_EXHAUSTED with the delay the server wants, e.g. "2s" or "0.5s"."""
    return error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _FREE_TIER_METRIC,
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": DEFAULT_MODEL},
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "rate limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
        ],
    )


def per_day_quota() -> Reply:
    """The daily free-tier quota is used up: retrying today cannot help (the server still says when)."""
    return error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _FREE_TIER_METRIC,
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": DEFAULT_MODEL},
                        "quotaValue": "250",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"},
        ],
    )


def server_error(code: int = 500) -> Reply:
    if code == 503:
        return error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    return error(500, "INTERNAL", "An internal error has occurred. Please retry or report in the forum.")


def bad_key() -> Reply:
    return error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    )


def hang(seconds: float) -> Reply:
    r = text('{"never": "read"}')
    return Reply(r.status, r.body, delay=seconds)


class GeminiFake(ScriptedServer):
    """`with GeminiFake() as g: g.answer(text(...)); client base_url=g.url`."""

    def __init__(self) -> None:
        super().__init__(
            lambda method, path: method == "POST" and _PATH.match(path.split("?", 1)[0]) is not None,
            lambda path: error(404, "NOT_FOUND", f"models/{path} is not found for API version v1beta"),
        )

    @staticmethod
    def model_of(request: Received) -> str:
        match = _PATH.match(request.path.split("?", 1)[0])
        assert match is not None, request.path
        return match.group("model")

    @staticmethod
    def prompt_of(request: Received) -> str:
        return "".join(p.get("text", "") for c in request.body["contents"] for p in c["parts"])
