"""A loopback OpenAI-compatible server (what Ollama, vLLM and llama.cpp's server expose under /v1) for tests:
`POST /v1/chat/completions` only, with the chat.completion reply and the `{"error": {...}}` error body."""

from __future__ import annotations

from fakes.scripted_http import Received, Reply, ScriptedServer

PATH = "/v1/chat/completions"


def text(answer: str, model: str = "qwen2.5:7b") -> Reply:
    return Reply(
        200,
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59},
        },
    )


def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers or {}
    )


def rate_limited(retry_after: str) -> Reply:
    return error(
        429, "Rate limit reached, try again later", "rate_limit_exceeded", {"Retry-After": retry_after}
    )


def server_error() -> Reply:
    return error(500, "model runner has unexpectedly stopped", "api_error")


def model_missing(model: str) -> Reply:
    return error(404, f'model "{model}" not found, try pulling it first', "api_error")


class OpenAICompatFake(ScriptedServer):
    def __init__(self) -> None:
        super().__init__(
            lambda method, path: method == "POST" and path == PATH,
            lambda path: error(404, f"404 page not found: {path}", "invalid_request_error"),
        )

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @staticmethod
    def user_prompt(request: Received) -> str:
        return "\n".join(m["content"] for m in request.body["messages"] if m["role"] == "user")
