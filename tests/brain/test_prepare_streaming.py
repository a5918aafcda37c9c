"""Prepare's streaming path: the script reads records one at a time exactly as the whole-file reader does,
and forged splits only the lines it validated, even from a script that rewrites its output as it runs."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from forged.brain import sandbox
from forged.brain.ingest import DataError, prepare
from forged.brain.scripts.records import RecordStream, load_records

needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)

_ROW = '{"prompt": "p%d", "response": "r\\u2028%d"}'
# Files whose shape the streaming reader must tell apart the way the whole-file parser does.
SAME_RECORDS = {
    "crlf.jsonl": "\r\n".join(_ROW % (i, i) for i in range(3)) + "\r\n",
    "cut.jsonl": "\n".join(_ROW % (i, i) for i in range(3)) + '\n{"prompt": "p3", "resp',
    "cut_then_blank.jsonl": _ROW % (0, 0) + '\n{"prompt": "p1"\n   ',
    "one_object.jsonl": '{"data": [{"prompt": "a", "response": "b"}]}\n\n',
    "pretty.json": json.dumps([{"prompt": "a", "response": "b"}] * 2, indent=2),
    "wrapper.json": json.dumps({"data": [{"prompt": "a", "response": "b"}]}, indent=1),
    "bom.csv": '\ufeffprompt,response\n"multi\nline",x\n',
    "leading_blanks.csv": "\r\n\nprompt;response\r\na;b\r\n\r\nshort\r\n",
    "long_row.csv": "prompt,response\na,b,extra\n",
    "paragraphs.txt": "first paragraph\n\nsecond\none\n",
    "sheet.tsv": "question\tanswer\nq\ta\n",
}
SAME_ERRORS = {
    "bad_middle.jsonl": _ROW % (0, 0) + "\n{oops}\n" + _ROW % (2, 2) + "\n",
    "cut_with_newline.jsonl": _ROW % (0, 0) + '\n{"prompt": "p1"\n',
    "not_object.jsonl": _ROW % (0, 0) + "\n[1, 2]\n",
    "header_only.csv": "prompt,response\n",
    "blank.csv": "\ufeff  \n\n",
    "no_columns.dat": "just some words\n",
    "not_json.json": "prompt,response\na,b\n",
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("name", sorted(SAME_RECORDS))
def test_stream_yields_what_the_whole_file_reader_returns(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, SAME_RECORDS[name])
    dropped: Counter[str] = Counter()
    records, fmt = load_records(path, name, dropped)
    stream = RecordStream(path, name)
    assert (list(stream), stream.format) == (records, fmt)
    assert stream.count == len(records) and bool(stream.truncated_line) == bool(dropped)


@pytest.mark.parametrize("name", sorted(SAME_ERRORS))
def test_stream_refuses_with_the_whole_file_readers_message(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, SAME_ERRORS[name])
    with pytest.raises(DataError) as whole:
        load_records(path, name, Counter())
    with pytest.raises(DataError) as streamed:
        list(RecordStream(path, name))
    assert str(streamed.value) == str(whole.value)


def test_invalid_utf8_deep_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_bytes(b"prompt,response\n" + b"a,b\n" * 400_000 + b"caf\xe9,x\n")
    with pytest.raises(DataError, match=r"byte 0xe9 at offset \d+ \(line 400002\)"):
        RecordStream(path, "late.csv")


# Writes 12 valid records, reads them back so forged's validator has seen them while following the file,
# then replaces the file with one whose records break the contract. What was read must not be what is split.
SWAPPING = """
import json, os, time
good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
with open("/out/prepared.jsonl", "w") as f:
    for i in range(12):
        f.write(json.dumps(good) + "\\n")
time.sleep(0.5)
with open("/out/next.jsonl", "w") as f:
    for i in range(12):
        f.write(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\\n")
os.replace("/out/next.jsonl", "/out/prepared.jsonl")
"""


@needs_bwrap
def test_output_replaced_while_followed_is_validated_as_it_ended(tmp_path: Path) -> None:
    data = _write(tmp_path, "qa.csv", "prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(12)))
    with pytest.raises(DataError, match=r"12 invalid records in prepared\.jsonl: line 1: the last turn"):
        prepare(data, "qa.csv", tmp_path / "out", seed=1, script=SWAPPING)
    assert not (tmp_path / "out" / "train.jsonl").exists()


@needs_bwrap
def test_a_file_is_never_held_whole(tmp_path: Path) -> None:
    """The offline path with less memory for the script than reading the file whole takes."""
    rows = 40_000
    data = tmp_path / "big.jsonl"
    with data.open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"prompt": f"question {i} " + "x" * 1000, "response": f"answer {i}"}) + "\n")
    # The whole-file reader needs several times the file's 40 MB; the stream needs a few MB above Python.
    limits = sandbox.Limits(memory_bytes=120 << 20)
    prepared = prepare(data, data.name, tmp_path / "out", seed=1, limits=limits)
    assert prepared.stats.rows_in == rows
    assert prepared.stats.train_examples + prepared.stats.val_examples == rows
    first = json.loads((tmp_path / "out" / "train.jsonl").open().readline())
    assert first["messages"][0]["content"].startswith("question ")


def test_csv_records_are_what_csv_dictreader_reads(tmp_path: Path) -> None:
    # The readers build records without DictReader's per-row overhead; what they hold must not change.
    text = 'prompt,response,prompt\n"a, b",c,d\n\nshort\nx,y,z,extra,more\n"multi\nline",,\n'
    path = _write(tmp_path, "odd.csv", text)
    with path.open(encoding="utf-8", newline="") as f:
        expected = list(csv.DictReader(f))
    assert list(RecordStream(path, "odd.csv")) == expected
    assert load_records(path, "odd.csv", Counter())[0] == expected


def test_split_keeps_every_validated_line_in_order_and_groups_whole(tmp_path: Path) -> None:
    # Every fourth prompt repeats one of three, so runs of validation lines and groups both occur.
    prompts = [f"Same question {i % 3}" if i % 4 == 0 else f"question {i}" for i in range(400)]
    rows = ["prompt,response"] + [f"{p},answer {i}" for i, p in enumerate(prompts)]
    src = _write(tmp_path, "qa.csv", "\n".join(rows) + "\n")
    result = prepare(src, "qa.csv", tmp_path / "out", seed=3)
    train = result.train_data.read_text(encoding="utf-8").splitlines()
    val = result.val_data.read_text(encoding="utf-8").splitlines()
    assert len(val) == 40 and len(train) == 360
    answers = [int(json.loads(line)["messages"][1]["content"].split()[1]) for line in train + val]
    assert sorted(answers) == list(range(400))
    for side in (train, val):  # each file keeps the script's order
        numbers = [int(json.loads(line)["messages"][1]["content"].split()[1]) for line in side]
        assert numbers == sorted(numbers)
    val_prompts = {json.loads(line)["messages"][0]["content"].casefold() for line in val}
    train_prompts = {json.loads(line)["messages"][0]["content"].casefold() for line in train}
    assert not val_prompts & train_prompts
