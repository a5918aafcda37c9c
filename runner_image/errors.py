"""Failures the runner explains to forged as an `error` event plus an exit code."""

from __future__ import annotations

# Exit codes from docs/runner-protocol.md.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; forged requeues the job


class RunnerError(Exception):
    """An expected failure: `code` and `hint` end up in the error event, `exit_code` in the process status.

    Defaults to exit 2 (bad spec or data, no retry) because most expected failures are the user's input.
    """

    def __init__(self, code: str, message: str, hint: str = "", exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
