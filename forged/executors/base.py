"""What forged needs from anything that can run the trainer: a process today, a container next."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Runner exit status meaning "stopped on request after writing a checkpoint" (EX_TEMPFAIL).
EXIT_PREEMPTED = 75
EXIT_BAD_INPUT = 2


class ExecutorError(RuntimeError):
    """The runner could not be started (no image for this GPU, the engine refused): the job fails with
    this one line, which says what to do; it is not a bug in forged."""


def engine_message(exc: BaseException) -> str:
    """The first line of what the Docker engine (or the SDK) said: its explanation without the HTTP frame."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class RunRequest:
    job_id: str
    workspace: Path
    spec_path: Path
    # The module (and subcommand) run as `python -m ... --spec SPEC`: training by default; an export runs
    # `runner_image merge`, then `forged.export.worker`. All speak docs/runner-protocol.md.
    entry: tuple[str, ...] = ("runner_image", "run")
    # The GPUs (NVML indices) the scheduler placed the job on: the runner sees exactly these. None: no
    # placement (a machine without GPUs), the environment is left as it is.
    gpu_indices: tuple[int, ...] | None = None


class RunHandle(Protocol):
    @property
    def pid(self) -> int | None: ...

    @property
    def pid_started(self) -> float | None: ...

    def lines(self) -> Iterator[str]:
        """The runner's output, stdout and stderr merged, line by line until it exits."""
        ...

    def wait(self) -> int:
        """Exit status; a negative number is the signal that killed it."""
        ...

    def terminate(self) -> None:
        """Ask for a checkpoint and a clean stop (the runner exits 75)."""
        ...

    def kill(self) -> None:
        """Stop now; no checkpoint."""
        ...


class Executor(Protocol):
    name: str

    def start(self, request: RunRequest) -> RunHandle: ...

    def qlora_missing(self, gpu_indices: tuple[int, ...]) -> str:
        """What 4-bit training lacks where a job on these GPUs runs, in words for the job's owner; empty
        when nothing. Asked by self-healing before it tries 4-bit weights (docs/runner-protocol.md)."""
        ...


QLORA_CHECK = ("runner_image", "qlora-check")


def qlora_check_answer(code: int, stdout: str, stderr: str, where: str) -> str:
    """`runner_image qlora-check`'s output as Executor.qlora_missing's answer. A check that fails says so:
    4-bit weights are then not tried, which costs the job one rung, never the job."""
    lines = stdout.strip().splitlines()
    try:
        missing = json.loads(lines[-1])["qlora"] if code == 0 and lines else None
    except (ValueError, KeyError, TypeError):
        missing = None
    if not isinstance(missing, str):
        return qlora_check_failed(where, (stderr.strip().splitlines() or [f"exit status {code}"])[-1])
    return f"{missing} where the runner runs ({where})" if missing else ""


def qlora_check_failed(where: str, said: str) -> str:
    """Executor.qlora_missing's answer when the check itself could not run or answer."""
    return f"the runner's 4-bit check failed where the runner runs ({where}): {said}"
