"""Ingest: real files written to tmp_path, every layout and every bad input the brief names."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forged.brain.ingest import (
    DataError,
    DatasetStats,
    load_records,
    prepare,
    to_examples,
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def write_csv(
    tmp_path: Path, name: str, header: list[str], rows: list[list[str]], delimiter: str = ","
) -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(tmp_path: Path, name: str, records: list[Any]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(r) + "\n" for r in records))


def convs_of(path: Path, name: str | None = None) -> tuple[list[Any], str, dict[str, int]]:
    records, _ = load_records(path, name or path.name)
    convs, layout, dropped = to_examples(records, name or path.name)
    return [c if isinstance(c, str) else list(c) for c in convs], layout, dict(dropped)


def qa(user: str, assistant: str, system: str | None = None) -> list[dict[str, str]]:
    conv = [{"role": "system", "content": system}] if system else []
    return [*conv, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def data_error(path: Path, name: str | None = None) -> str:
    with pytest.raises(DataError) as info:
        records, _ = load_records(path, name or path.name)
        to_examples(records, name or path.name)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# ----------------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------------


def test_alpaca_input_appended_and_placeholders_dropped(tmp_path: Path) -> None:
    records = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a color.", "input": "", "output": "Blue"},
        {"instruction": "Name a fruit.", "input": "N/A", "output": "Apple"},
        {"instruction": "Name a tree.", "input": "No input", "output": "Oak"},
        {"instruction": "Name a bird.", "input": "<no input>", "output": "Robin"},
        {"instruction": "Name a fish.", "input": "< noinput >", "output": "Trout"},
        {"instruction": "Name a river.", "input": "No input.", "output": "Nile"},
        {"instruction": "Name a city.", "output": "Paris"},
    ]
    path = write(tmp_path, "alpaca.json", json.dumps(records))
    convs, layout, dropped = convs_of(path)
    assert layout == "instruction/input/output"
    assert dropped == {}
    assert convs[0] == qa("Translate to French.\n\nGood morning", "Bonjour")
    for conv, rec in zip(convs[1:], records[1:], strict=True):
        assert conv == qa(rec["instruction"], rec["output"])


def test_dolly_context_appended(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        "dolly.jsonl",
        [
            {
                "instruction": "Who wrote it?",
                "context": "Hamlet is a play.",
                "response": "Shakespeare",
                "category": "qa",
            },
            {"instruction": "Say hi.", "context": "", "response": "Hi!", "category": "open_qa"},
        ],
    )
    convs, layout, _ = convs_of(path)
    assert layout == "instruction/context/response"
    assert convs == [qa("Who wrote it?\n\nHamlet is a play.", "Shakespeare"), qa("Say hi.", "Hi!")]


def test_prompt_response_case_insensitive_extra_columns_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "pr.csv", [" Prompt", "RESPONSE", "id"], [["Hello?", "Hi there.", "1"]])
    convs, layout, _ = convs_of(path)
    assert layout == "prompt/response"
    assert convs == [qa("Hello?", "Hi there.")]


@pytest.mark.parametrize(
    ("prompt_key", "answer_key", "layout"),
    [
        ("prompt", "completion", "prompt/completion"),
        ("question", "answer", "question/answer"),
        ("Input", "Output", "input/output"),
        ("instruction", "response", "instruction/response"),
        ("instruction", "output", "instruction/output"),
    ],
)
def test_flat_layouts(tmp_path: Path, prompt_key: str, answer_key: str, layout: str) -> None:
    path = write_jsonl(tmp_path, "flat.jsonl", [{prompt_key: "  2+2?  ", answer_key: "4\n", "note": "x"}])
    convs, found, _ = convs_of(path)
    assert found == layout
    assert convs == [qa("2+2?", "4")]


def test_system_column(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "sys.csv",
        ["question", "answer", "System"],
        [["Hi?", "Hello!", "Be brief."], ["Bye?", "Goodbye!", ""]],
    )
    convs, layout, _ = convs_of(path)
    assert layout == "question/answer+system"
    assert convs == [qa("Hi?", "Hello!", system="Be brief."), qa("Bye?", "Goodbye!")]


def test_openai_messages(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Thanks"},  # trailing user turn: no signal, trimmed
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Parts"}]},
                    {"role": "assistant", "content": "ok"},
                ]
            },
            {
                "messages": [
                    {"role": "system", "content": "x"},
                    {"role": "assistant", "content": "no question"},
                ]
            },
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "   "}]},
            {"messages": [{"role": "narrator", "content": "{}"}, {"role": "assistant", "content": "a"}]},
        ],
    )
    convs, layout, dropped = convs_of(path)
    assert layout == "messages"
    assert convs == [qa("Hi", "Hello!", system="Be kind."), qa("Parts", "ok")]
    assert dropped == {"no user turn": 1, "empty response": 1, "unsupported role 'narrator'": 1}


def test_sharegpt_conversations(tmp_path: Path) -> None:
    records = [
        {
            "conversations": [
                {"from": "system", "value": "You help."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
                {"from": "user", "value": "More?"},
                {"from": "assistant", "value": "Sure"},
            ]
        },
        {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "See you"}]},
    ]
    path = write(tmp_path, "sharegpt.json", json.dumps(records, indent=2))
    convs, layout, dropped = convs_of(path)
    assert layout == "conversations" and dropped == {}
    assert convs == [
        [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "More?"},
            {"role": "assistant", "content": "Sure"},
        ],
        qa("Bye", "See you"),
    ]


def test_tool_calling_rejects_the_file(tmp_path: Path) -> None:
    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    glaive = {
        "conversations": [
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "weather"}'},
            {"from": "observation", "value": '{"temp": 20}'},
            {"from": "gpt", "value": "20 degrees"},
        ],
        "tools": '[{"name": "weather"}]',
    }
    message = data_error(write(tmp_path, "tools.json", json.dumps([plain, glaive, plain])))
    assert message.startswith("1 of 3 conversations in tools.json use tool calling (")
    assert "'function_call'" in message and "'observation'" in message and "a tools field" in message
    assert "remove those conversations" in message
    # OpenAI's spelling: an assistant turn that carries tool_calls, then a tool turn.
    openai = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]},
            {"role": "tool", "content": "20"},
            {"role": "assistant", "content": "20 degrees"},
        ]
    }
    message = data_error(write_jsonl(tmp_path, "tools.jsonl", [openai]))
    assert "'assistant with tool_calls'" in message and "'tool'" in message


def test_weights_kept_on_assistant_turns(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        "w.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Q", "weight": 0},  # a no-op on a user turn: dropped
                    {"role": "assistant", "content": "draft", "weight": 0},
                    {"role": "user", "content": "again"},
                    {"role": "assistant", "content": "final", "weight": 1},
                    {"role": "user", "content": "thanks"},
                    {"role": "assistant", "content": "bye", "weight": 0},  # untrained tail: cut
                ]
            },
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A", "weight": 0},
                ]
            },
        ],
    )
    convs, layout, dropped = convs_of(path)
    assert layout == "messages"
    assert convs == [
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final", "weight": 1},
        ],
        qa("Q", "A"),
    ]
    assert dropped == {"every assistant turn has weight 0": 1}


@pytest.mark.parametrize(
    ("turn", "needle"),
    [
        (
            {"role": "assistant", "content": "A", "weight": 0.5},
            "message 1 has weight 0.5; a weight must be 0",
        ),
        ({"role": "assistant", "content": "A", "weight": "1"}, 'message 1 has weight "1"'),
        ({"role": "assistant", "content": "A", "weight": True}, "message 1 has weight true"),
        (
            {"role": "user", "content": "more", "weight": 1},
            "message 1 is a user turn with weight 1, but only",
        ),
    ],
)
def test_bad_weight_rejects_the_file(tmp_path: Path, turn: dict[str, Any], needle: str) -> None:
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    bad = {"messages": [{"role": "user", "content": "Q"}, turn, {"role": "assistant", "content": "A"}]}
    message = data_error(write_jsonl(tmp_path, "w.jsonl", [good, bad]))
    assert message.startswith(f"record 2 of w.jsonl: {needle}"), message


def test_messages_as_json_string_in_csv(tmp_path: Path) -> None:
    msgs = json.dumps([{"role": "user", "content": "a, b"}, {"role": "assistant", "content": "c\nd"}])
    path = write_csv(tmp_path, "m.csv", ["messages"], [[msgs], ["not json"]])
    convs, layout, dropped = convs_of(path)
    assert layout == "messages"
    assert convs == [qa("a, b", "c\nd")]
    assert dropped == {"malformed messages": 1}


def test_empty_answers_and_prompts_dropped_and_counted(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "qa.csv",
        ["question", "answer"],
        [["Q1", "A1"], ["Q2", ""], ["Q3", "   "], ["", "A4"], ["Q5"]],
    )
    convs, _, dropped = convs_of(path)
    assert convs == [qa("Q1", "A1")]
    assert dropped == {"empty response": 3, "empty prompt": 1}


def test_repetitive_answer_dropped(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        "rep.jsonl",
        [{"prompt": "Snack?", "response": "Eat a banana! " * 500}, {"prompt": "Hi", "response": "Hello"}],
    )
    convs, _, dropped = convs_of(path)
    assert convs == [qa("Hi", "Hello")]
    assert dropped == {"repetitive response": 1}


def test_csv_quoting_bom_and_crlf(tmp_path: Path) -> None:
    content = '\ufeffquestion,answer\r\n"Hi, there","line one\r\nline two, with ""quotes"""\r\n'
    path = write(tmp_path, "q.csv", content.encode("utf-8"))
    records, fmt = load_records(path, "q.csv")
    assert fmt == "csv"
    convs, layout, _ = to_examples(records)
    assert layout == "question/answer"
    assert convs == [qa("Hi, there", 'line one\r\nline two, with "quotes"')]


@pytest.mark.parametrize(("name", "delimiter", "fmt"), [("d.tsv", "\t", "tsv"), ("d.csv", ";", "csv")])
def test_other_delimiters(tmp_path: Path, name: str, delimiter: str, fmt: str) -> None:
    path = write_csv(tmp_path, name, ["prompt", "response"], [["a, b", "c"]], delimiter=delimiter)
    records, found = load_records(path, name)
    assert found == fmt
    assert to_examples(records)[0] == [qa("a, b", "c")]


def test_format_detected_by_content(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    one_line_array = write(tmp_path, "array.jsonl", json.dumps(rows))
    assert load_records(one_line_array, "array.jsonl") == (rows, "json")
    jsonl_named_json = write_jsonl(tmp_path, "lines.json", rows)
    assert load_records(jsonl_named_json, "lines.json") == (rows, "jsonl")
    single = write_jsonl(tmp_path, "one.jsonl", rows[:1])
    assert load_records(single, "one.jsonl") == (rows[:1], "jsonl")
    wrapped = write(tmp_path, "wrapped.json", json.dumps({"data": rows}))
    assert load_records(wrapped, "wrapped.json") == (rows, "json")
    # The upload's name decides, not the temp file's.
    blob = write_csv(tmp_path, "blob", ["prompt", "response"], [["a", "b"]])
    assert load_records(blob, "upload.csv")[1] == "csv"


def test_unicode_kept(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, "u.jsonl", [{"prompt": "Café \u2028 naïve?", "response": "Oui ✓ 日本"}])
    convs, _, _ = convs_of(path)
    assert convs == [qa("Café \u2028 naïve?", "Oui ✓ 日本")]


# ----------------------------------------------------------------------------------------------------------
# Bad inputs: every one a one-line DataError that says what to do
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n  \r\n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    message = data_error(write(tmp_path, "data.csv", content))
    assert "data.csv is empty" in message and "add" in message


def test_binary_file(tmp_path: Path) -> None:
    message = data_error(write(tmp_path, "data.csv", b"prompt,response\x00\x01\x02\xff\x00"))
    assert "binary" in message and "UTF-8" in message


def test_excel_workbook(tmp_path: Path) -> None:
    message = data_error(write(tmp_path, "data.csv", b"PK\x03\x04\x14\x00\x06\x00rest-of-zip"))
    assert "zip" in message and "CSV UTF-8" in message


def test_text_in_no_known_encoding(tmp_path: Path) -> None:
    # Every byte value but NUL, over and over: no code page makes prose of it.
    message = data_error(write(tmp_path, "data.csv", bytes(range(1, 256)) * 40))
    assert "data.csv is not text in any encoding" in message and "re-save" in message


def test_header_only_csv(tmp_path: Path) -> None:
    message = data_error(write(tmp_path, "data.csv", "prompt,response\n\n"))
    assert message == "data.csv has a header but no rows: add at least 10 examples below the header"


def test_unknown_layout(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "tickets.csv", ["A", "B", "C"], [["1", "2", "3"]])
    message = data_error(path)
    assert message == (
        "no known column layout in tickets.csv (columns: A, B, C); rename columns to prompt/response, "
        "instruction/output, question/answer, or give a messages list"
    )


def test_broken_json_names_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "data.json", '[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "c" "response": "d"}\n]'
    )
    message = data_error(path)
    assert "not valid JSON" in message and "line 3" in message and "fix" in message


def test_broken_one_line_json_array_names_column(tmp_path: Path) -> None:
    rows = json.dumps([{"prompt": f"p{i}", "response": f"r{i}"} for i in range(50)])
    broken = rows[:400] + rows[401:]  # drop one character in the middle of the single line
    message = data_error(write(tmp_path, "data.jsonl", broken))
    assert "line 1 column" in message


def test_broken_jsonl_names_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "data.jsonl", '{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": }\n'
    )
    message = data_error(path)
    assert message.startswith("data.jsonl line 3 is not valid JSON")


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("data.json", '["just a string", "another"]', "record 1"),
        ("data.jsonl", '{"prompt": "a", "response": "b"}\n[1, 2]\n', "line 2"),
    ],
)
def test_records_not_objects(tmp_path: Path, name: str, content: str, where: str) -> None:
    message = data_error(write(tmp_path, name, content))
    assert message.startswith(where) and "not an object" in message


def test_empty_json_array(tmp_path: Path) -> None:
    assert "has no records" in data_error(write(tmp_path, "data.json", "[]"))


def test_json_extension_but_csv_content(tmp_path: Path) -> None:
    message = data_error(write(tmp_path, "data.json", "prompt,response\na,b\n"))
    assert "not JSON" in message and ".csv" in message


def test_plain_text_is_one_document_per_paragraph(tmp_path: Path) -> None:
    content = "First Citizen:\r\nBefore we proceed,\r\n  hear me.\r\n\r\n \t \r\nAll:\r\nSpeak.\r\n\r\n\r\n"
    records, fmt = load_records(write(tmp_path, "poems.txt", content), "poems.txt")
    assert fmt == "text"
    docs, layout, dropped = to_examples(records)
    assert layout == "text" and dropped == {}
    assert docs == ["First Citizen:\nBefore we proceed,\n  hear me.", "All:\nSpeak."]


def test_txt_with_a_known_header_is_a_table(tmp_path: Path) -> None:
    # Excel's "Text (Tab delimited)" export: a .txt whose header names a layout is read as a table.
    path = write_csv(tmp_path, "export.txt", ["prompt", "response"], [["a, b", "c"]], delimiter="\t")
    records, fmt = load_records(path, "export.txt")
    assert fmt == "tsv" and to_examples(records)[0] == [qa("a, b", "c")]
    # Prose with commas in its first line is still prose.
    records, fmt = load_records(write(tmp_path, "p.txt", "Well, sir, well.\nAnd so.\n"), "p.txt")
    assert fmt == "text" and to_examples(records)[0] == ["Well, sir, well.\nAnd so."]


def test_text_records_are_documents(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        "docs.jsonl",
        [
            {"id": 1, "text": "\n    def f():\n        return 1\n", "meta": {"lang": "py"}},
            {"id": 2, "text": "  \n"},
            {"id": 3, "text": "A line. " * 600},
        ],
    )
    docs, layout, dropped = convs_of(path)
    assert layout == "text"
    assert docs == ["    def f():\n        return 1"]  # indentation is content; blank lines around it are not
    assert dropped == {"empty text": 1, "repetitive text": 1}


def test_text_beside_a_label_is_not_prose(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "cls.csv", ["text", "label"], [["great film", "positive"]])
    assert data_error(path).startswith("no known column layout in cls.csv (columns: text, label)")


def test_plain_text_without_txt_extension(tmp_path: Path) -> None:
    message = data_error(write(tmp_path, "poems", "First Citizen:\nBefore we proceed any further\n"))
    assert "plain text" in message and ".txt" in message


def test_nothing_usable(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "qa.csv", ["question", "answer"], [["Q1", ""], ["Q2", " "]])
    message = data_error(path)
    assert message.startswith("no usable examples in qa.csv: all 2 records were dropped (2 empty response)")


def test_message_stays_one_line_with_odd_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "x.csv", ["col\none", "B"], [["1", "2"]])
    message = data_error(path, "my\nfile.csv")
    assert "my file.csv" in message


# ----------------------------------------------------------------------------------------------------------
# prepare: split, files, stats
# ----------------------------------------------------------------------------------------------------------


def qa_csv(tmp_path: Path, n: int, name: str = "qa.csv") -> Path:
    return write_csv(
        tmp_path, name, ["question", "answer"], [[f"question {i}", f"answer {i}"] for i in range(n)]
    )


def read_split(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_deterministic_and_disjoint(tmp_path: Path) -> None:
    src = qa_csv(tmp_path, 100)
    a = prepare(src, "qa.csv", tmp_path / "a", seed=7)
    b = prepare(src, "qa.csv", tmp_path / "b", seed=7)
    c = prepare(src, "qa.csv", tmp_path / "c", seed=8)
    assert a.train_data.read_bytes() == b.train_data.read_bytes()
    assert a.val_data.read_bytes() == b.val_data.read_bytes()
    assert a.val_data.read_bytes() != c.val_data.read_bytes()

    train, val = read_split(a.train_data), read_split(a.val_data)
    assert (len(train), len(val)) == (90, 10)
    users = [r["messages"][0]["content"] for r in train + val]
    assert len(set(users)) == 100  # no overlap, nothing lost
    assert all(set(r) == {"messages"} for r in train + val)
    assert a.stats.train_examples == 90 and a.stats.val_examples == 10
    assert a.brain == "offline"


@pytest.mark.parametrize(("n", "val"), [(1, 0), (9, 0), (10, 1), (14, 1), (15, 2), (1000, 100)])
def test_val_size(tmp_path: Path, n: int, val: int) -> None:
    result = prepare(qa_csv(tmp_path, n), "qa.csv", tmp_path / "out", seed=1)
    assert result.stats.val_examples == val
    assert result.stats.train_examples == n - val
    assert len(read_split(result.val_data)) == val


def test_val_fraction_range(tmp_path: Path) -> None:
    src = qa_csv(tmp_path, 20)
    assert prepare(src, "qa.csv", tmp_path / "none", seed=1, val_fraction=0).stats.val_examples == 0
    with pytest.raises(DataError, match="val_fraction"):
        prepare(src, "qa.csv", tmp_path / "bad", seed=1, val_fraction=0.9)


def test_stats(tmp_path: Path) -> None:
    # Conversation lengths 1+k chars for k = 1..20 -> 2..21; distinct one-letter prompts, since rows with
    # the same prompt are near-duplicates that the split keeps together.
    rows = [[chr(ord("a") + k), "a" * k] for k in range(1, 21)] + [["q", ""], ["", "a"]]
    src = write_csv(tmp_path, "s.csv", ["question", "answer", "category"], [[*r, "c"] for r in rows])
    stats = prepare(src, "s.csv", tmp_path / "out", seed=3).stats
    # Token lengths and languages are tested with the tokenizer in test_prepare_normalize.py.
    measured = {"tokens_p50", "tokens_p95", "tokens_p99", "languages"}
    assert stats.model_dump(exclude=measured) == DatasetStats(
        rows_in=22,
        train_examples=18,
        val_examples=2,
        dropped=2,
        dropped_reasons={"empty response": 1, "empty prompt": 1},
        layout="question/answer",
        source_format="csv",
        chars_p50=11,
        chars_p95=20,
        chars_max=21,
        kind="chat",
    ).model_dump(exclude=measured)


def test_no_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(qa_csv(tmp_path, 12), "qa.csv", out, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["prepare_script.py", "train.jsonl", "val.jsonl"]
    # A failing prepare leaves the previous good split untouched and no temp files behind.
    before = (out / "train.jsonl").read_bytes()
    with pytest.raises(DataError):
        prepare(write(tmp_path, "bad.csv", b""), "bad.csv", out, seed=1)
    assert (out / "train.jsonl").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["prepare_script.py", "train.jsonl", "val.jsonl"]


def test_example_csv_prepares(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "customer_support.csv"
    result = prepare(example, example.name, tmp_path / "out", seed=42)
    stats = result.stats
    assert 200 <= stats.rows_in <= 300
    assert stats.dropped == 0 and stats.layout == "question/answer" and stats.source_format == "csv"
    assert stats.val_examples >= 20
    with example.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"question", "answer", "category"} <= set(rows[0])
    assert len({r["question"].lower() for r in rows}) == len(rows)


def test_daemon_modules_do_not_import_torch() -> None:
    code = (
        "import sys, forged.brain.ingest, forged.brain.planner; "
        "bad = [m for m in ('torch', 'transformers', 'numpy', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
