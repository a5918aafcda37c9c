"""Helpers for the runner tests: spec files, running `python -m runner_image`, checking event shapes.

A plain module (not conftest) so test files can import it by name; pytest puts this directory on sys.path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TRAIN = FIXTURES / "chat_train.jsonl"
VAL = FIXTURES / "chat_val.jsonl"

# Field name -> JSON types allowed, per JobEvent payload (protos/forge/v1/jobs.proto, protobuf JSON mapping).
NUMBER = (int, float)
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "log": {"level": (str,), "message": (str,), "source": (str,)},
    "step": {
        "step": (int,),
        "total_steps": (int,),
        "loss": NUMBER,
        "learning_rate": NUMBER,
        "tokens_per_second": NUMBER,
        "eta_seconds": NUMBER,
        "epoch": NUMBER,
        "grad_norm": NUMBER,
    },
    "eval": {"step": (int,), "val_loss": NUMBER},
    "checkpoint": {"step": (int,), "path": (str,)},
    "artifact": {"name": (str,), "path": (str,)},
    "error": {"code": (str,), "message": (str,), "hint": (str,)},
}

# A small but non-trivial shape: 24 examples in micro-batches of 5 leave a short last micro-batch, and
# grad_accum 2 over 5 micro-batches leaves a short last window; dropout exercises the RNG state on resume.
BASE_HPARAMS: dict[str, Any] = {
    "epochs": 10,
    "max_steps": 0,
    "micro_batch_size": 5,
    "grad_accum": 2,
    "learning_rate": 1e-3,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "max_seq_len": 256,
    "seed": 7,
    "checkpoint_every": 5,
    "eval_every": 10,
    "warmup_ratio": 0.1,
}
STEPS_PER_EPOCH = 3
TOTAL_STEPS = 30


def check_event_shape(event: object) -> tuple[str, dict[str, Any]]:
    """Assert one parsed stdout line is a documented event; return (kind, payload)."""
    assert isinstance(event, dict) and len(event) == 1, event
    ((kind, payload),) = event.items()
    assert kind in EVENT_FIELDS, f"unknown event kind {kind!r}"
    assert isinstance(payload, dict)
    assert set(payload) == set(EVENT_FIELDS[kind]), (kind, sorted(payload))
    for name, types in EVENT_FIELDS[kind].items():
        value = payload[name]
        assert isinstance(value, types) and not isinstance(value, bool), (kind, name, value)
    return kind, payload


@dataclass
class RunResult:
    rc: int
    events: list[dict[str, Any]]
    stderr: str
    other_lines: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e[kind] for e in self.events if kind in e]


def parse_stdout(stdout: str) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stdout.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        events.append(obj)
    return events, other


def runner_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def runner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner_image", *args]


def run_runner(*args: str, cwd: Path, timeout: float = 120) -> RunResult:
    proc = subprocess.run(
        runner_cmd(*args), cwd=cwd, env=runner_env(), capture_output=True, text=True, timeout=timeout
    )
    events, other = parse_stdout(proc.stdout)
    return RunResult(proc.returncode, events, proc.stderr, other)


def write_spec(
    workspace: Path,
    *,
    train_file: Path = TRAIN,
    val_file: Path | None = VAL,
    model: dict[str, Any] | None = None,
    **hparams: Any,
) -> Path:
    """Write a runner spec (tiny model unless told otherwise) into `workspace`; returns its path."""
    workspace.mkdir(parents=True, exist_ok=True)
    spec = {
        "job_id": f"j-{workspace.name}",
        "model": model or {"kind": "tiny"},
        "train_file": str(train_file),
        "val_file": str(val_file) if val_file else None,
        "output_dir": str(workspace / "output"),
        "checkpoint_dir": str(workspace / "checkpoints"),
        "hparams": {**BASE_HPARAMS, **hparams},
    }
    path = workspace / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def adapter_weights(workspace: Path) -> dict[str, torch.Tensor]:
    return load_file(str(workspace / "output" / "adapter" / "adapter_model.safetensors"))
