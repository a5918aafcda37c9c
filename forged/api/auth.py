"""Who is calling. Per-user mode trusts the 0600 socket; shared-box mode demands a token on every call."""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from forged.store.users import Principal, UserStore

# Probes that systemd, load balancers and `forgectl` use before they have a token.
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_CACHE_TTL = 30.0


def _metadata(pairs: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (pairs or ()) if isinstance(v, str)}


def _bearer(md: dict[str, str]) -> str | None:
    value = md.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


class Authenticator:
    def __init__(self, mode: str, users: UserStore) -> None:
        if mode not in ("none", "token"):
            raise ValueError(f"unknown auth mode {mode!r}: use none or token")
        self.mode = mode
        self.users = users
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._daemon_user = getpass.getuser()

    def _lookup(self, token: str) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
            if hit and now - hit[0] < _CACHE_TTL:
                return hit[1]
        principal = self.users.authenticate(token)
        with self._lock:
            self._cache[token] = (now, principal)
        return principal

    def from_metadata(self, pairs: Any) -> Principal | None:
        md = _metadata(pairs)
        if self.mode == "none":
            # The socket is private to the daemon's user, so every caller is that user, under any name.
            return Principal(md.get("x-forge-user") or self._daemon_user, admin=True)
        token = _bearer(md)
        return self._lookup(token) if token else None

    def principal(self, context: grpc.ServicerContext) -> Principal:
        p = self.from_metadata(context.invocation_metadata())
        if p is None:  # the interceptor already refused these; this guards direct use
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid forge token is required")
        assert p is not None
        return p


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        if self.auth.mode == "none" or details.method.startswith(_OPEN_METHODS):
            return continuation(details)
        if self.auth.from_metadata(details.invocation_metadata) is not None:
            return continuation(details)
        handler = continuation(details)
        return _refusal(handler)


def _refusal(handler: Any) -> Any:
    message = (
        "this forged requires a token: ask the box's admin for one (`forged token create USER`) and put it "
        "in FORGE_TOKEN or ~/.config/forge/token"
    )

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)
