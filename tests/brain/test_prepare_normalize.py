"""Prepare and study read a user's file the same way: other encodings and Parquet are normalized by forged
before the stdlib-only script sees them, and prepare's stats carry study's token and language measures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from forged.brain import tokens
from forged.brain.ingest import prepare, read_data, to_examples
from forged.brain.planner import TINY_MODEL
from forged.brain.study import study

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "study"


def written(result_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for name in ("train.jsonl", "val.jsonl")
        for line in (result_dir / name).read_text(encoding="utf-8").splitlines()
    ]


def tiny_tokenizer() -> Tokenizer:
    source = tokens.find_tokenizer(TINY_MODEL)
    assert source is not None and source.path.suffix == ".json"
    return Tokenizer.from_file(str(source.path))


@pytest.mark.parametrize(
    ("name", "source_format", "encoding"),
    [("faq_cp1252.csv", "csv", "cp1252"), ("faq_utf16.csv", "csv", "utf-16"), ("faq.parquet", "parquet", "")],
)
def test_other_encodings_and_parquet_prepare_like_study_reads_them(
    tmp_path: Path, name: str, source_format: str, encoding: str
) -> None:
    result = prepare(FIXTURES / name, name, tmp_path, seed=1, val_fraction=0)
    assert (result.stats.source_format, result.stats.train_examples, result.stats.dropped) == (
        source_format,
        12,
        0,
    )
    # The script read exactly the records study reads, converted by the same rules.
    expected, _, _ = to_examples(read_data(FIXTURES / name, name).records, name)
    assert [r["messages"] for r in written(tmp_path)] == expected
    assert study(FIXTURES / name, name).usable_rows == 12
    if encoding:
        assert any(f"is {encoding} text" in note for note in result.notes)
    if name == "faq_cp1252.csv":
        answers = [r["messages"][-1]["content"] for r in written(tmp_path)]
        assert "La livraison express coûte 9,90 €." in answers


def test_a_cut_off_last_record_is_dropped_and_counted(tmp_path: Path) -> None:
    name = "truncated.jsonl"
    stats = prepare(FIXTURES / name, name, tmp_path, seed=1, val_fraction=0).stats
    assert (stats.rows_in, stats.train_examples, stats.dropped_reasons) == (
        6,
        5,
        {"truncated last record": 1},
    )
    report = study(FIXTURES / name, name)
    assert report.usable_rows == 5
    assert [f.row_numbers for f in report.findings if f.code == "truncated_last_record"] == [[6]]


ENGLISH = [
    ("How do I reset my password?", "Open the settings page and choose the option to reset it."),
    ("Where is my order?", "It is on the way and you will have it within three days."),
    ("Can I pay with a card?", "Yes, you can pay with any card that we show on the checkout page."),
]
GERMAN = [
    ("Wie setze ich mein Passwort zurück?", "Öffne die Einstellungen und wähle dort die Option."),
    ("Wo ist meine Bestellung?", "Sie ist unterwegs und ist in drei Tagen bei dir, wie versprochen."),
]


def test_stats_count_tokens_with_the_planned_tokenizer_and_name_the_languages(tmp_path: Path) -> None:
    pairs = [(f"{q} ({i})", a) for i in range(8) for q, a in ENGLISH] + [
        (f"{q} ({i})", a) for i in range(4) for q, a in GERMAN
    ]
    src = tmp_path / "faq.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("question", "answer"), *pairs])
    stats = prepare(src, "faq.csv", tmp_path / "out", seed=1).stats
    assert stats.languages == ["en", "de"]

    tokenizer = tiny_tokenizer()
    counts = sorted(len(tokenizer.encode(f"{q}\n{a}", add_special_tokens=False).ids) for q, a in pairs)

    def nearest_rank(q: float) -> int:
        return counts[math.ceil(q * len(counts)) - 1]

    assert (stats.tokens_p50, stats.tokens_p95, stats.tokens_p99) == (
        nearest_rank(0.5),
        nearest_rank(0.95),
        nearest_rank(0.99),
    )


def test_text_chunks_fit_max_seq_len_in_the_tokenizers_own_tokens(tmp_path: Path) -> None:
    # SmolLM2's tokenizer spends a token per digit, so 4 characters a token (the old default) would make
    # chunks about three times longer than max_seq_len.
    lines = [" ".join(f"{n * 7919 % 100000:05d}" for n in range(i, i + 12)) for i in range(300)]
    src = tmp_path / "numbers.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    prepare(src, "numbers.txt", out, seed=1, val_fraction=0, max_seq_len=64)
    chunks = [r["text"] for r in written(out)]
    tokenizer = tiny_tokenizer()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(chunks, add_special_tokens=False)]
    assert len(chunks) > 20
    assert max(lengths) <= 64 * 1.1 and sorted(lengths)[len(lengths) // 2] >= 40
