"""Every data shape issue 3 names, from a small real file through prepare() and the planner.

The fixtures in tests/fixtures/shapes are also what tests/runner/test_runner_shapes.py trains on, so a shape
that passes here is known to train.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forged.brain.ingest import prepare
from forged.brain.planner import TEXT_CHUNK_LEN, plan

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "shapes"


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(
    ("name", "layout", "source_format"),
    [
        ("chat_weights.jsonl", "messages", "jsonl"),
        ("sharegpt.json", "conversations", "json"),
        ("alpaca.json", "instruction/input/output", "json"),
        ("prompt_completion.jsonl", "prompt/completion", "jsonl"),
        ("plain.txt", "text", "text"),
        ("documents.jsonl", "text", "jsonl"),
    ],
)
def test_every_shape_prepares_and_plans(tmp_path: Path, name: str, layout: str, source_format: str) -> None:
    result = prepare(SHAPES / name, name, tmp_path, seed=3)
    stats = result.stats
    assert (stats.layout, stats.source_format, stats.dropped) == (layout, source_format, 0)
    assert stats.train_examples + stats.val_examples == stats.rows_in == 12
    written = rows(result.train_data) + rows(result.val_data)
    if layout == "text":
        assert all(set(r) == {"text"} and r["text"].strip() for r in written)
    else:
        for r in written:
            assert set(r) == {"messages"}
            roles = [m["role"] for m in r["messages"]]
            assert "user" in roles and roles[-1] == "assistant"
    spec = plan("test", stats).spec
    if layout == "text":
        # Text is chunked, not truncated: the planner asks for a context size, not a fit to paragraphs.
        decision = plan("test", stats).decision("max_seq_len")
        assert spec["max_seq_len"] == TEXT_CHUNK_LEN and "chunks" in decision.reason
    else:
        assert spec["max_seq_len"] == 128


def test_chat_weights_survive_prepare(tmp_path: Path) -> None:
    result = prepare(SHAPES / "chat_weights.jsonl", "chat_weights.jsonl", tmp_path, seed=3)
    for r in rows(result.train_data) + rows(result.val_data):
        assistants = [m for m in r["messages"] if m["role"] == "assistant"]
        assert [m["weight"] for m in assistants] == [0, 1]
        assert all("weight" not in m for m in r["messages"] if m["role"] != "assistant")


def test_sharegpt_spellings_and_system_prompt(tmp_path: Path) -> None:
    result = prepare(SHAPES / "sharegpt.json", "sharegpt.json", tmp_path, seed=3, val_fraction=0)
    convs = [r["messages"] for r in rows(result.train_data)]
    assert convs[0] == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    assert [m["role"] for m in convs[1]] == ["system", "user", "assistant", "user", "assistant"]
