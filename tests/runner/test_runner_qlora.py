"""QLoRA: refused at once where it cannot run (this CPU), and a run of its own for checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_testlib import TRAIN, VAL

from runner_image.errors import EXIT_BAD_INPUT, RunnerError
from runner_image.signals import StopFlag
from runner_image.spec import parse_spec
from runner_image.train import fingerprint, run


def _spec(workspace: Path, method: str | None) -> dict[str, object]:
    hparams = {"max_steps": 2} | ({"method": method} if method else {})
    return {
        "job_id": "j-qlora",
        "model": {"kind": "tiny"},
        "train_file": str(TRAIN),
        "val_file": str(VAL),
        "output_dir": str(workspace / "output"),
        "checkpoint_dir": str(workspace / "checkpoints"),
        "hparams": hparams,
    }


def test_qlora_without_an_nvidia_gpu_fails_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(RunnerError) as info:
        run(parse_spec(_spec(tmp_path, "qlora")), StopFlag())
    assert info.value.code == "qlora_unavailable"
    assert info.value.message == "QLoRA needs an NVIDIA GPU and bitsandbytes: use method lora"
    assert info.value.exit_code == EXIT_BAD_INPUT  # retrying cannot help
    assert not (tmp_path / "output").exists() and not (tmp_path / "checkpoints").exists()


def test_switching_to_4_bit_continues_the_same_checkpoints(tmp_path: Path) -> None:
    # forged's last out-of-memory rung resumes a LoRA run on 4-bit base weights: the adapter carries on.
    unset, lora, qlora = (fingerprint(parse_spec(_spec(tmp_path, m))) for m in (None, "lora", "qlora"))
    assert unset == lora == qlora
    # A QLoRA checkpoint written when the method was part of the identity is still recognised.
    legacy = fingerprint(parse_spec(_spec(tmp_path, "qlora")), with_method=True)
    assert legacy != qlora and fingerprint(parse_spec(_spec(tmp_path, "lora")), with_method=True) == lora
