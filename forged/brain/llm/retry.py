"""Forge's own retry policy for LLM requests, shared by every backend (the SDKs' own retries are turned off,
so what happens on a 429 or a 500 is decided, bounded and testable here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forged.brain.llm.base import BrainUnavailable


class Retry(Exception):
    """Raised by one try that may succeed later; `delay` is what the server asked for (None: back off)."""

    def __init__(self, why: str, delay: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.delay = delay


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included
    base_delay: float = 1.0  # exponential backoff: 1, 2, 4 ... seconds
    max_delay: float = 16.0
    max_server_delay: float = 65.0  # the longest a server's own retry delay is honoured (per-minute limits)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)


def with_retries(once: Callable[[], str], policy: RetryPolicy, what: str) -> str:
    """Call `once` until it returns, sleeping between tries as the server asks or with exponential backoff."""
    why = ""
    for n in range(policy.attempts):
        try:
            return once()
        except Retry as r:
            why = r.why
            if n == policy.attempts - 1:
                break
            if r.delay is not None:
                if r.delay > policy.max_server_delay:
                    raise BrainUnavailable(
                        f"{what} asks to wait {r.delay:g}s before the next request ({why}); try again later"
                    ) from None
                delay = r.delay
            else:
                delay = min(policy.max_delay, policy.base_delay * 2**n)
            policy.sleep(delay)
    raise BrainUnavailable(
        f"{what} still failed after {policy.attempts} tries ({why}); try again later or use the offline brain"
    )
