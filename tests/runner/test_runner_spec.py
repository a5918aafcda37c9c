"""RunnerSpec: the JSON in docs/runner-protocol.md parses; anything else is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner_image.errors import EXIT_BAD_INPUT, RunnerError
from runner_image.spec import HParams, load_spec, parse_spec

DOC_EXAMPLE: dict[str, Any] = {
    "job_id": "j-123",
    "model": {"kind": "tiny"},
    "train_file": "/abs/train.jsonl",
    "val_file": None,
    "output_dir": "/abs/workspace/output",
    "checkpoint_dir": "/abs/workspace/checkpoints",
    "hparams": {
        "epochs": 3,
        "max_steps": 0,
        "micro_batch_size": 4,
        "grad_accum": 1,
        "learning_rate": 2e-4,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "max_seq_len": 512,
        "seed": 42,
        "checkpoint_every": 20,
        "eval_every": 20,
        "warmup_ratio": 0.05,
    },
}


def _with(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(DOC_EXAMPLE))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for p in parents:
            node = node[p]
        node[leaf] = value
    return spec


def _refused(data: object) -> RunnerError:
    with pytest.raises(RunnerError) as info:
        parse_spec(data)
    assert info.value.code == "bad_spec"
    assert info.value.exit_code == EXIT_BAD_INPUT
    return info.value


def test_doc_example_parses() -> None:
    spec = parse_spec(DOC_EXAMPLE)
    assert spec.model.kind == "tiny" and spec.model.path is None
    assert spec.hparams == HParams()  # the defaults are the documented example
    assert spec.val_file is None
    assert spec.train_file == "/abs/train.jsonl"


def test_path_model_and_val_file() -> None:
    spec = parse_spec(_with(model={"kind": "path", "path": "/models/x"}, val_file="/abs/val.jsonl"))
    assert spec.model.path == "/models/x"
    assert spec.val_file == "/abs/val.jsonl"


def test_relative_paths_become_absolute_and_empty_val_is_none(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(_with(train_file="data/train.jsonl", output_dir="out", val_file=""))
    assert spec.train_file == str(tmp_path / "data" / "train.jsonl")
    assert spec.output_dir == str(tmp_path / "out")
    assert spec.val_file is None


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"surprise": 1}, "surprise"),
        ({"hparams__lora_rnak": 8}, "hparams.lora_rnak"),
        ({"model": {"kind": "path"}}, "model.path"),
        ({"model": {"kind": "tiny", "path": "/x"}}, "takes no model.path"),
        ({"model": {"kind": "hub", "path": "org/name"}}, "model.kind"),
        ({"hparams__micro_batch_size": 0}, "hparams.micro_batch_size"),
        ({"hparams__learning_rate": -1.0}, "hparams.learning_rate"),
        ({"hparams__lora_dropout": 1.0}, "hparams.lora_dropout"),
        ({"hparams__epochs": "three"}, "hparams.epochs"),
        ({"hparams__method": "dora"}, "hparams.method: Input should be 'lora' or 'qlora'"),
        ({"job_id": ""}, "job_id"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(changes: dict[str, Any], needle: str) -> None:
    assert needle in _refused(_with(**changes)).message


def test_missing_required_field() -> None:
    data = _with()
    del data["train_file"]
    assert "train_file" in _refused(data).message


def test_load_spec_reports_unreadable_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RunnerError, match="not valid JSON") as info:
        load_spec(bad)
    assert info.value.exit_code == EXIT_BAD_INPUT
