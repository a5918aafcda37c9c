"""One place that turns what went wrong into a gRPC status with a one-line message the CLI can print."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog

from forged.brain.ingest import DataError
from forged.brain.llm.base import BrainError, BrainQuotaExhausted
from forged.brain.llm.keys import KeyStoreError
from forged.brain.llm.select import BrainChoiceError
from forged.brain.planner import PlanError
from forged.models.resolve import ModelError
from forged.store.blobs import BlobError
from forged.store.jobs import AmbiguousJobId, InvalidTransition, JobNotFound

log = structlog.get_logger("forged.api")
F = TypeVar("F", bound=Callable[..., Any])


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ApiError):
        return exc.code, exc.message
    if isinstance(exc, BrainQuotaExhausted):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, _one_line(str(exc))
    if isinstance(exc, BrainError):  # unavailable or an unusable answer: the request cannot go on
        return grpc.StatusCode.FAILED_PRECONDITION, _one_line(str(exc))
    if isinstance(exc, DataError | PlanError | ModelError | BlobError | KeyStoreError | BrainChoiceError):
        return grpc.StatusCode.INVALID_ARGUMENT, _one_line(str(exc))
    if isinstance(exc, JobNotFound):
        return grpc.StatusCode.NOT_FOUND, f"no job {exc.args[0]!r} (list yours with `forgectl jobs`)"
    if isinstance(exc, AmbiguousJobId):
        return grpc.StatusCode.INVALID_ARGUMENT, f"{exc.args[0]!r} matches several jobs: give more of the id"
    if isinstance(exc, InvalidTransition):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    log.exception("rpc_failed")
    return grpc.StatusCode.INTERNAL, f"internal error in forged ({type(exc).__name__}); see the daemon log"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def unary(fn: F) -> F:
    """Wrap a unary handler: any exception becomes a proper status; the daemon never dies of a request."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as exc:  # context.abort raises a plain Exception too; re-raising it is harmless
            if context.code() is not None:
                raise
            code, message = _status_of(exc)
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    """The same for server-streaming handlers, which are generators."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
            return
        except Exception as exc:
            if context.code() is not None:
                raise
            code, message = _status_of(exc)
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]
