"""Each data shape, as ingest writes it, is read, masked and trained by the runner.

Ingest's output is the runner's input with nothing in between, so this pins that contract: every shape
passes the formatting pre-flight with the tiny model's real tokenizer, and all of them together train for
two steps in one real `python -m runner_image` process (one process because each start costs seconds of
imports; the daemon-level run per shape, forgectl ignite, is the end-to-end test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_testlib import run_runner, write_spec
from transformers import PreTrainedTokenizerBase

from forged.brain.ingest import PreparedData, prepare
from runner_image.data import IGNORE_INDEX, load_dataset
from runner_image.format_check import format_preflight

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "shapes"
CHAT_SHAPES = ("chat_weights.jsonl", "sharegpt.json", "alpaca.json", "prompt_completion.jsonl")
TEXT_SHAPES = ("plain.txt", "documents.jsonl")


def prepared(tmp_path: Path, name: str) -> PreparedData:
    return prepare(SHAPES / name, name, tmp_path / name, seed=1, val_fraction=0)


@pytest.mark.parametrize("name", CHAT_SHAPES + TEXT_SHAPES)
def test_each_shape_passes_the_formatting_preflight(
    tmp_path: Path, name: str, tiny_tokenizer: PreTrainedTokenizerBase, capsys: pytest.CaptureFixture[str]
) -> None:
    data = prepared(tmp_path, name)
    ds = load_dataset(data.train_data, tiny_tokenizer, max_seq_len=64)
    report = format_preflight(ds, tiny_tokenizer, max_seq_len=64)
    out = capsys.readouterr().out
    assert "example 0 as trained" in out and "format check passed" in out
    if name in TEXT_SHAPES:
        assert set(ds.kinds) == {"text"} and report.trained_ratio > 0.95
        assert all(e.labels == e.input_ids and len(e.input_ids) <= 64 for e in ds.examples)
    else:
        assert set(ds.kinds) == {"chat"} and len(ds.examples) == 12 and 0 < report.trained_ratio < 0.5
    if name == "chat_weights.jsonl":
        trained = [tiny_tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in ds.examples]
        assert not any("Let me think" in t for t in trained)  # the weight-0 draft is context, not target
        assert all(t.endswith("<|im_end|>") for t in trained)


def test_all_shapes_train_in_a_runner_process(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    with mixed.open("w", encoding="utf-8") as out:
        for name in CHAT_SHAPES + TEXT_SHAPES:
            out.write(prepared(tmp_path, name).train_data.read_text(encoding="utf-8"))
    # One micro-batch holds every example, so both steps see every shape.
    spec = write_spec(
        tmp_path / "ws",
        train_file=mixed,
        val_file=None,
        max_steps=2,
        micro_batch_size=128,
        grad_accum=1,
        max_seq_len=64,
        checkpoint_every=100,
    )
    result = run_runner("run", "--spec", str(spec), cwd=tmp_path / "ws")
    assert result.rc == 0, (result.events[-3:], result.stderr[-2000:])
    assert [s["step"] for s in result.of("step")] == [1, 2]
    summary = next(e["message"] for e in result.of("log") if e["message"].startswith("format check passed"))
    assert "48 chat examples" in summary and "text chunks" in summary
    assert (tmp_path / "ws" / "output" / "adapter" / "adapter_model.safetensors").is_file()


# Every real dataset prepare accepts (`file`, side files, goal); the trainer must accept what prepare wrote.
REAL = {
    "alpaca": ("alpaca/alpaca_5000.json", (), ""),
    "dolly": ("dolly15k_sample/databricks-dolly-15k.first12.jsonl", (), ""),
    "openai-toy": ("openai_toy_chat_messages/toy_chat_fine_tuning.jsonl", (), ""),
    "spider": ("spider_dev/dev.json", ("spider_dev/tables.json",), "Turn questions into SQL"),
    "tinyshakespeare": ("tinyshakespeare/input.txt", (), "Write like Shakespeare"),
    "tickets": ("customer_support_tickets/customer_support_tickets.csv", (), "classify tickets by type"),
}


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_what_prepare_makes_of_each_real_dataset_passes_the_trainers_preflight(
    tmp_path: Path,
    dataset: str,
    realdata: Path,
    tiny_tokenizer: PreTrainedTokenizerBase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    file, sides, goal = REAL[dataset]
    src = realdata / file
    side_files = {Path(s).name: realdata / s for s in sides}
    data = prepare(src, src.name, tmp_path, seed=1, goal=goal, side_files=side_files, max_seq_len=256)
    ds = load_dataset(data.train_data, tiny_tokenizer, max_seq_len=256)
    report = format_preflight(ds, tiny_tokenizer, max_seq_len=256)
    assert "format check passed" in capsys.readouterr().out
    if data.stats.kind == "text":  # documents are packed end to end into max_seq_len chunks
        assert ds.documents == data.stats.train_examples and report.text_chunks > 0
    else:
        assert len(ds.examples) >= 0.9 * data.stats.train_examples, "the trainer keeps what prepare kept"
    assert report.trained_tokens > 0
