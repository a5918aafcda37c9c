"""prepare() over real public datasets nobody here shaped. Needs FORGE_REALDATA=/path/to/shared/datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forged.brain.ingest import DataError, PreparedData, prepare
from forged.brain.planner import plan


def one(realdata: Path, pattern: str) -> Path:
    matches = sorted(realdata.glob(pattern))
    assert matches, f"no file matches {pattern} under {realdata}"
    return matches[0]


def read_split(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_sane(result: PreparedData) -> list[dict[str, Any]]:
    stats = result.stats
    assert stats.train_examples > 0
    assert stats.rows_in == stats.train_examples + stats.val_examples + stats.dropped
    assert stats.dropped == sum(stats.dropped_reasons.values())
    assert 0 < stats.chars_p50 <= stats.chars_p95 <= stats.chars_max
    train, val = read_split(result.train_data), read_split(result.val_data)
    assert (len(train), len(val)) == (stats.train_examples, stats.val_examples)
    for record in train + val:
        messages = record["messages"]
        roles = [m["role"] for m in messages]
        assert set(roles) <= {"system", "user", "assistant"}
        assert "user" in roles and roles[-1] == "assistant"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
    # The planner accepts whatever prepare produced.
    spec = plan("test", stats, {}, None).spec
    assert 128 <= spec["max_seq_len"] <= 2048
    return train + val


def test_alpaca_one_line_array(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "alpaca/alpaca_5000.json")
    result = prepare(src, src.name, tmp_path, seed=1)
    records = check_sane(result)
    stats = result.stats
    assert (stats.source_format, stats.layout, stats.rows_in) == ("json", "instruction/input/output", 5000)
    assert stats.dropped_reasons == {"empty response": 2}
    assert stats.val_examples == 500
    # Placeholder inputs ("No input", "<no input>", "N/A", ...) never reach the prompt.
    prompts = [r["messages"][0]["content"] for r in records]
    assert not any(
        p.lower().endswith(("\n\nno input", "\n\n<no input>", "\n\nn/a", "\n\nnoinput")) for p in prompts
    )


def test_dolly_jsonl(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "dolly15k_sample/*.jsonl")
    result = prepare(src, src.name, tmp_path, seed=1)
    check_sane(result)
    assert (result.stats.layout, result.stats.source_format) == ("instruction/context/response", "jsonl")
    assert result.stats.train_examples + result.stats.val_examples == 12


def test_openai_toy_chat_flaws_dropped(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "openai_toy_chat_messages/*.jsonl")
    result = prepare(src, src.name, tmp_path, seed=1)
    check_sane(result)
    stats = result.stats
    assert stats.layout == "messages"
    # One record has no user turn; one answer is "Eat a banana!" repeated to 26 KB.
    assert stats.dropped_reasons == {"no user turn": 1, "repetitive response": 1}
    assert stats.chars_max < 1000


def test_glaive_toolcall_is_refused_with_a_reason(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "llamafactory_glaive_toolcall_en/*.json")
    with pytest.raises(DataError) as info:
        prepare(src, src.name, tmp_path, seed=1)
    message = str(info.value)
    # 153 conversations call a function; 38 more carry a tools list their plain answers were written for.
    assert message.startswith(f"191 of 300 conversations in {src.name} use tool calling (")
    assert "'function_call'" in message and "'observation'" in message and "remove those" in message
    assert not (tmp_path / "train.jsonl").exists()


def test_tinyshakespeare_is_text_by_paragraph(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "tinyshakespeare/input.txt")
    result = prepare(src, src.name, tmp_path, seed=1)
    stats = result.stats
    assert (stats.layout, stats.source_format, stats.dropped) == ("text", "text", 0)
    assert stats.train_examples + stats.val_examples == stats.rows_in > 7000
    first = read_split(result.train_data)[0]
    assert set(first) == {"text"} and first["text"].count("\n\n") == 0
    assert plan("test", stats, {}, None).spec["max_seq_len"] == 512


def test_customer_support_tickets_has_no_layout(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "customer_support_tickets/customer_support_tickets.csv")
    with pytest.raises(DataError) as info:
        prepare(src, src.name, tmp_path, seed=1)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no known column layout in customer_support_tickets.csv (columns: Ticket ID,")
    assert "rename columns to prompt/response" in message
    assert not (tmp_path / "train.jsonl").exists()


def test_spider_joins_the_schema_from_tables_json(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "spider_dev/dev.json")
    tables = one(realdata, "spider_dev/tables.json")
    result = prepare(src, src.name, tmp_path, seed=1, side_files={"tables.json": tables})
    records = check_sane(result)
    assert result.stats.layout == "question/query+schema" and result.stats.dropped == 0
    first = records[0]["messages"]
    # The prompt names the database and its tables with typed columns; the answer is the query, one-spaced.
    assert first[0]["content"].startswith("Database ") and "\n\nQuestion: " in first[0]["content"]
    assert "(" in first[0]["content"].split("\n")[1] and "  " not in first[1]["content"]
    assert any("joined the schema of 166 databases" in note for note in result.notes)
    assert json.loads(result.mapping_json)["schema_file"] == "tables.json"


def test_spider_without_tables_json_says_why_the_schema_is_missing(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "spider_dev/dev.json")
    result = prepare(src, src.name, tmp_path, seed=1)
    records = check_sane(result)
    assert result.stats.layout == "question/query"
    assert not records[0]["messages"][0]["content"].startswith("Database ")
    assert any(note.startswith("no tables.json was given") for note in result.notes)


def test_tickets_cannot_serve_summarize_tickets(realdata: Path, tmp_path: Path) -> None:
    src = one(realdata, "customer_support_tickets/customer_support_tickets.csv")
    with pytest.raises(DataError) as info:
        prepare(src, src.name, tmp_path, seed=1, goal="summarize tickets")
    message = str(info.value)
    assert message.startswith("no natural target for 'summarize tickets': no column holds summaries")
    assert "'Resolution' is empty in 5,700 of 8,469 rows" in message and "\n" not in message
    assert not tmp_path.joinpath("train.jsonl").exists()


def test_tickets_can_serve_a_goal_a_column_answers(realdata: Path, tmp_path: Path) -> None:
    """No known layout, but the goal names a column the data does hold: the mapping is justified."""
    src = one(realdata, "customer_support_tickets/customer_support_tickets.csv")
    result = prepare(src, src.name, tmp_path, seed=1, goal="classify tickets by type")
    records = check_sane(result)
    assert result.notes[0].startswith("the goal decided the mapping: 'Ticket Type' has 5 distinct values")
    answers = {r["messages"][-1]["content"] for r in records}
    assert answers <= {"Refund request", "Technical issue", "Cancellation request", "Product inquiry",
                       "Billing inquiry"}  # fmt: skip
