"""The readers behind study and prepare: every format and encoding a user's export really comes in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forged.brain.ingest import DataError, load_records, read_data, to_examples

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "study"


@pytest.mark.parametrize(("name", "encoding"), [("faq_utf16.csv", "utf-16"), ("faq_cp1252.csv", "cp1252")])
def test_non_utf8_csv_is_decoded_in_its_own_encoding(name: str, encoding: str) -> None:
    loaded = read_data(FIXTURES / name, name)
    assert (loaded.format, loaded.encoding, len(loaded.records)) == ("csv", encoding, 12)
    # Accents, the euro sign and cp1252's curly apostrophe come through as the characters they were.
    answers = [r["answer"] for r in loaded.records]
    assert answers[2] == "La livraison express coûte 9,90 €."
    assert answers[3] == "Oui, sous 30 jours, l\u2019article doit être intact."
    assert loaded.records[0]["question"] == "Où est ma commande ?"


def test_utf8_with_and_without_bom(tmp_path: Path) -> None:
    body = "prompt,response\nCafé?,Oui ✓\n"
    for encoding, data in (("utf-8-sig", b"\xef\xbb\xbf" + body.encode()), ("utf-8", body.encode())):
        path = tmp_path / "d.csv"
        path.write_bytes(data)
        loaded = read_data(path, "d.csv")
        assert loaded.encoding == encoding
        assert loaded.records == [{"prompt": "Café?", "response": "Oui ✓"}]


def test_tsv() -> None:
    loaded = read_data(FIXTURES / "faq.tsv", "faq.tsv")
    assert (loaded.format, loaded.delimiter, len(loaded.records)) == ("tsv", "\t", 12)
    assert set(loaded.records[0]) == {"question", "answer", "category"}
    examples, layout, dropped = to_examples(loaded.records)
    assert (layout, len(examples), sum(dropped.values())) == ("question/answer", 12, 0)


def test_parquet_read_in_batches_keeps_types_and_nesting() -> None:
    # The fixture has 5-row row groups, so 12 rows span three batches.
    loaded = read_data(FIXTURES / "faq.parquet", "faq.parquet")
    assert (loaded.format, loaded.encoding, len(loaded.records)) == ("parquet", "binary", 12)
    first = loaded.records[0]
    assert first["id"] == 1 and first["tags"] == ["faq", "account"]
    assert [r["id"] for r in loaded.records] == list(range(1, 13))
    assert to_examples(loaded.records)[1] == "prompt/response"


def test_damaged_parquet_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes((FIXTURES / "faq.parquet").read_bytes()[:300])
    with pytest.raises(DataError) as info:
        read_data(path, "d.parquet")
    assert str(info.value).startswith("d.parquet cannot be read as Parquet (")
    assert "\n" not in str(info.value)


def test_one_line_json_array(tmp_path: Path) -> None:
    rows = [{"instruction": f"say {i}" * 50, "input": "", "output": "ok " * 600} for i in range(1000)]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert path.stat().st_size > 2_000_000 and path.read_text().count("\n") == 0
    loaded = read_data(path, "one.json")
    assert (loaded.format, len(loaded.records)) == ("json", 1000)


def test_truncated_last_jsonl_record_is_reported_not_read() -> None:
    loaded = read_data(FIXTURES / "truncated.jsonl", "truncated.jsonl")
    assert (len(loaded.records), loaded.truncated_line) == (5, 6)
    # prepare's reader refuses it with the line, rather than training on a file that was cut short.
    with pytest.raises(DataError, match=r"truncated.jsonl line 6 is not valid JSON: the last record stops"):
        load_records(FIXTURES / "truncated.jsonl", "truncated.jsonl")


def test_utf16_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("question,answer\nWie spät ist es?,Es ist drei Uhr.\n".encode("utf-16-le") * 3)
    loaded = read_data(path, "d.csv")
    assert loaded.encoding.startswith("utf_16") or loaded.encoding.startswith("utf-16")
    assert loaded.records[0]["question"] == "Wie spät ist es?"


def test_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(DataError) as info:
        read_data(path, "photo.csv")
    assert str(info.value).startswith("photo.csv looks like a binary file")
