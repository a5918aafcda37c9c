"""What every LLM brain is: ask a question, get back a pydantic model that has been validated, never trusted.

A backend only sends one request and returns the answer's raw text (`_complete`), mapping its transport's
failures onto the three errors below; this module owns unwrapping the JSON, validating it, and the one
re-ask that shows the model its own validation error.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class BrainError(Exception):
    """str() is one line: what went wrong with the brain and what the user can do about it."""


class BrainUnavailable(BrainError):
    """No key, unreachable, or the key was refused: callers fall back to the offline rules and say so."""


class BrainQuotaExhausted(BrainError):
    """The provider's per-day quota is used up: retrying today cannot help, so this request fails."""


class BrainAnswerInvalid(BrainError):
    """The model answered twice with something that is not the JSON asked for."""


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer: bare, inside a ```json fence, or with prose around it.

    Raises ValueError (json.JSONDecodeError) when there is none."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.strip() for m in _FENCE.findall(stripped)]
    # Prose around it: the outermost object (or array) the text contains.
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = stripped.find(opener), stripped.rfind(closer)
        if 0 <= start < end:
            candidates.append(stripped[start : end + 1])
    first_error: ValueError | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError as exc:
            first_error = first_error or exc
    raise first_error or ValueError("the answer is empty")


def one_line(value: object, limit: int = 300) -> str:
    """An error text fit for a one-line message: whitespace collapsed, bounded."""
    return " ".join(str(value).split())[:limit]


def schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema sent with the request, so the server constrains decoding to it where it can."""
    return schema.model_json_schema()


def _problem(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:8]]
        return "the JSON does not match the schema: " + "; ".join(parts)
    return f"the answer is not valid JSON ({exc})"


class LLMBrain(ABC):
    name: ClassVar[str]  # "gemini" | "local": what the user is told decided

    def __init__(self, model: str, address: str) -> None:
        self.model = model
        self.address = address  # where requests go, for messages

    @abstractmethod
    def _complete(self, system: str, prompt: str, schema: dict[str, Any]) -> str:
        """One request (with the backend's transport retries); the raw text of the answer."""

    def ask(self, system: str, prompt: str, schema: type[T]) -> T:
        """The answer as a validated `schema`; a malformed or off-schema answer gets exactly one re-ask that
        quotes the problem, then BrainAnswerInvalid."""
        wire_schema = schema_of(schema)
        problem = ""
        for attempt in (1, 2):
            asked = prompt
            if attempt == 2:
                asked = (
                    f"{prompt}\n\nYour previous answer was rejected: {problem}. Answer again with only a "
                    "JSON object that matches the schema."
                )
            text = self._complete(system, asked, wire_schema)
            try:
                return schema.model_validate(extract_json(text))
            except ValueError as exc:  # ValidationError and JSONDecodeError are both ValueErrors
                problem = _problem(exc)
        raise BrainAnswerInvalid(f"{self.name} ({self.model}) answered twice with unusable JSON: {problem}")

    def describe(self) -> str:
        return f"{self.name} ({self.model})"
