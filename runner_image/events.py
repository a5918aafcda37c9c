"""Events on stdout: one JSON object per line, keyed by a `JobEvent.payload` field name (see the protocol).

forged parses each line with `json_format.ParseDict`, so values follow protobuf's JSON mapping. If forged dies
the pipe breaks; training must go on regardless (the next attempt resumes from our checkpoints), so a broken
pipe silently turns emitting off instead of raising into the training loop.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

_stdout_broken = False


def _json_safe(value: Any) -> Any:
    # json.dumps would write bare NaN/Infinity, which is not JSON; protobuf's JSON mapping uses strings.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def emit(kind: str, payload: dict[str, Any]) -> None:
    """Write `{kind: payload}` as one line and flush; after a broken pipe, do nothing."""
    global _stdout_broken
    if _stdout_broken:
        return
    line = json.dumps({kind: _json_safe(payload)}, allow_nan=False, ensure_ascii=False) + "\n"
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        # ValueError: stdout was closed under us. Either way the reader is gone.
        _stdout_broken = True
        _silence_stdout()


def _silence_stdout() -> None:
    # Point fd 1 at /dev/null so that the interpreter's flush at exit, and any library that prints, cannot
    # raise BrokenPipeError again (the approach the Python docs recommend for SIGPIPE).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def stdout_broken() -> bool:
    return _stdout_broken


def log(message: str, level: str = "info") -> None:
    emit("log", {"level": level, "message": message, "source": "runner"})


def step(
    *,
    step: int,
    total_steps: int,
    loss: float,
    learning_rate: float,
    tokens_per_second: float,
    eta_seconds: float,
    epoch: float,
    grad_norm: float,
) -> None:
    emit(
        "step",
        {
            "step": step,
            "total_steps": total_steps,
            "loss": loss,
            "learning_rate": learning_rate,
            "tokens_per_second": tokens_per_second,
            "eta_seconds": eta_seconds,
            "epoch": epoch,
            "grad_norm": grad_norm,
        },
    )


def evaluation(step: int, val_loss: float) -> None:
    emit("eval", {"step": step, "val_loss": val_loss})


def checkpoint(step: int, path: str) -> None:
    emit("checkpoint", {"step": step, "path": path})


def artifact(name: str, path: str) -> None:
    emit("artifact", {"name": name, "path": path})


def error(code: str, message: str, hint: str = "") -> None:
    emit("error", {"code": code, "message": message, "hint": hint})
