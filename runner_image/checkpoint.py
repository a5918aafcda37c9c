"""Crash-safe checkpoints: `checkpoint_dir/step-NNNNNN/`, usable only once its COMPLETE marker exists.

A checkpoint is written into `step-NNNNNN.tmp/`, every file fsync'd, renamed into place, and only then marked
COMPLETE; so a process killed at any instant leaves either a usable checkpoint or something the next start
ignores and removes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"
KEEP = 3
_NAME = re.compile(r"^step-(\d{6,})$")
ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "trainer_state.pt"
POSITION_FILE = "position.json"


class Stateful(Protocol):
    """Something else whose state a resumed run needs (the fp16 loss scale)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Position:
    """Where training stands after `step` optimizer steps: the next micro-batch is `batch` of `epoch`."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    first_loss: float | None = None
    final_loss: float | None = None
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def step_dir(checkpoint_dir: Path, step: int) -> Path:
    return checkpoint_dir / f"step-{step:06d}"


def complete_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found: list[tuple[int, Path]] = []
    if not checkpoint_dir.is_dir():
        return found
    for child in checkpoint_dir.iterdir():
        m = _NAME.match(child.name)
        if m and child.is_dir() and (child / MARKER).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest(checkpoint_dir: Path) -> Path | None:
    found = complete_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def remove_incomplete(checkpoint_dir: Path) -> list[str]:
    """Delete leftovers of interrupted saves (`.tmp` dirs, dirs without a marker); returns their names."""
    removed: list[str] = []
    if not checkpoint_dir.is_dir():
        return removed
    for child in checkpoint_dir.iterdir():
        is_tmp = child.name.startswith("step-") and child.name.endswith(".tmp")
        is_unmarked = bool(_NAME.match(child.name)) and not (child / MARKER).is_file()
        if child.is_dir() and (is_tmp or is_unmarked):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    # torch.load(weights_only=True) accepts plain containers; keep Python's RNG tuple as nested lists.
    return [_to_lists(v) for v in value] if isinstance(value, tuple | list) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def save(
    checkpoint_dir: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: Position,
    loss_scaling: Stateful | None = None,
) -> Path:
    final = step_dir(checkpoint_dir, position.step)
    if (final / MARKER).is_file():
        return final
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp.mkdir()

    # The base model is rebuilt identically on resume, so only the LoRA weights need saving; False also keeps
    # PEFT from probing the Hub for the base model's config.
    lora = get_peft_model_state_dict(model, save_embedding_layers=False)
    weights = {k: v.detach().contiguous().cpu() for k, v in lora.items()}
    save_file(weights, str(tmp / ADAPTER_FILE))
    state: dict[str, Any] = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
    }
    if loss_scaling is not None:
        state["loss_scaling"] = loss_scaling.state_dict()
    torch.save(state, tmp / STATE_FILE)
    (tmp / POSITION_FILE).write_text(json.dumps(asdict(position), indent=2) + "\n")
    for name in (ADAPTER_FILE, STATE_FILE, POSITION_FILE):
        _fsync_file(tmp / name)
    _fsync_dir(tmp)

    os.rename(tmp, final)
    _fsync_dir(checkpoint_dir)
    (final / MARKER).write_text(f"{position.step}\n")
    _fsync_file(final / MARKER)
    _fsync_dir(final)
    prune(checkpoint_dir)
    return final


def prune(checkpoint_dir: Path, keep: int = KEEP) -> None:
    for _step, path in complete_checkpoints(checkpoint_dir)[:-keep]:
        # Unmark first so that a kill halfway through the delete never leaves a half-deleted "complete" one.
        (path / MARKER).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)


def read_position(path: Path) -> Position:
    return Position(**json.loads((path / POSITION_FILE).read_text()))


def load(
    path: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    loss_scaling: Stateful | None = None,
) -> Position:
    position = read_position(path)
    weights = load_file(str(path / ADAPTER_FILE), device=str(device))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"checkpoint {path} has weights this model does not: {unexpected[:3]}")
    # RNG states must stay on the CPU; optimizer.load_state_dict moves its tensors to the parameters' device.
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if loss_scaling is not None and "loss_scaling" in state:
        loss_scaling.load_state_dict(state["loss_scaling"])
    return position
