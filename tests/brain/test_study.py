"""study() on small committed fixtures and files written here: each check fires on what it names, and only
there."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from forge.study_report import StudyReport
from PIL import Image

from forged.brain.histogram import HEIGHT, WIDTH, render_png
from forged.brain.ingest import DataError
from forged.brain.languages import language_mix
from forged.brain.study import study

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "study"


def test_mangled_csv_is_flagged_not_trained() -> None:
    report = study(FIXTURES / "mangled.csv", "mangled.csv", goal="answer product questions")
    collapsed = report.finding("collapsed_rows")
    assert collapsed is not None and collapsed.severity == "error"
    assert collapsed.row_numbers == [3] and "9 lines that look like rows" in collapsed.examples[0]
    shape = report.finding("row_shape")
    assert shape is not None and shape.row_numbers == [3]
    assert report.rows == 3  # twelve rows in the file, three as the CSV reader sees them: 4-12 are in row 3


def test_clean_tsv_has_nothing_to_fix() -> None:
    report = study(FIXTURES / "faq.tsv", "faq.tsv", goal="answer product questions")
    assert (report.format, report.layout, report.usable_rows) == ("tsv", "question/answer", 12)
    assert [f for f in report.findings if f.severity != "info"] == []
    assert report.target is not None and (report.target.target, report.target.prompt) == (
        "answer",
        ["question"],
    )


@pytest.mark.parametrize(("name", "encoding"), [("faq_utf16.csv", "utf-16"), ("faq_cp1252.csv", "cp1252")])
def test_encodings_reported_and_french_detected(name: str, encoding: str) -> None:
    report = study(FIXTURES / name, name)
    assert (report.encoding, report.rows) == (encoding, 12)
    assert report.languages[0].code == "fr"
    assert report.finding("mojibake") is None and report.finding("replacement_characters") is None


def test_parquet_nested_column() -> None:
    report = study(FIXTURES / "faq.parquet", "faq.parquet")
    roles = {c.name: c.role for c in report.columns}
    assert roles == {"id": "id", "prompt": "prompt", "response": "response", "tags": "nested"}
    assert report.format == "parquet"


def test_truncated_jsonl_is_a_finding() -> None:
    report = study(FIXTURES / "truncated.jsonl", "truncated.jsonl")
    finding = report.finding("truncated_last_record")
    assert finding is not None and finding.row_numbers == [6]
    assert report.rows == 5


def test_text_checks_fire_where_they_should(tmp_path: Path) -> None:
    # Rows that differ in words, not only in numbers (which near-duplicate matching ignores).
    words = [f"gadget{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(40)]
    rows = [{"prompt": f"Where is my {w}?", "response": f"Your {w} ships today."} for w in words]
    rows[3]["response"] = "Your {product_name} ships today."
    rows[5]["response"] = "It ships <b>today</b>&nbsp;!"
    rows[7]["response"] = "CafÃ© is open, itâ€™s fine"
    rows[9]["prompt"] = "Mail me at jane.doe@example.com"
    rows[11] = dict(rows[10])
    rows[13] = {"prompt": rows[12]["prompt"].upper() + "!!", "response": rows[12]["response"] + " 2"}
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = study(path, "d.jsonl")
    found = {f.code: f.row_numbers for f in report.findings}
    assert found["placeholders"] == [4]
    assert found["html"] == [6]
    assert found["mojibake"] == [8]
    assert {p.kind: p.rows for p in report.pii} == {"email": 1}
    assert (report.duplicate_rows, report.near_duplicate_rows) == (1, 1)


def test_token_lengths_estimate_without_a_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "prompt,response\n" + "".join(f"q{i},{'word ' * 40}\n" for i in range(20)), encoding="utf-8"
    )
    report = study(path, "d.csv", model="some-org/not-downloaded")
    assert report.tokens.estimate and report.tokens.tokenizer == "estimate"
    assert "estimate" in report.tokens.note
    counted = study(path, "d.csv", model="tiny-qwen")
    assert not counted.tokens.estimate and "Qwen2.5" in counted.tokens.tokenizer
    # "word " is one token for Qwen's BPE, so 40 of them are ~40 tokens, not 200 characters / 4 = 50.
    assert 40 <= counted.tokens.p50 <= 45


def test_classify_goal_picks_the_named_label(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    lines = ["Ticket Description,Ticket Type,Ticket Priority"]
    for i in range(60):
        priority = ["Low", "High"][i % 2]
        lines.append(f"My order number {i} arrived broken and I would like a refund please,Refund,{priority}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = study(path, "d.csv", goal="predict the priority of each ticket")
    assert report.target is not None and report.target.found
    assert (report.target.target, report.target.prompt) == ("Ticket Priority", ["Ticket Description"])


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(DataError) as info:
        study(path, "blob.csv")
    assert "\n" not in str(info.value) and "binary" in str(info.value)


def test_language_mix() -> None:
    mix = dict(
        language_mix(
            ["The order is on its way and it will be there soon"] * 3
            + ["Die Bestellung ist unterwegs und kommt bald an, nicht wahr"]
            + ["東京は日本の首都です"]
            + ["KING:"]
        )
    )
    assert mix == {"en": 0.6, "de": 0.2, "ja": 0.2}


def test_histogram_png() -> None:
    report = study(FIXTURES / "faq.tsv", "faq.tsv")
    image = Image.open(io.BytesIO(render_png(report.tokens, "faq.tsv")))
    assert (image.format, image.size) == ("PNG", (WIDTH, HEIGHT))
    # Bars were drawn: the plot is not blank.
    assert len(image.getcolors(maxcolors=1 << 16) or []) > 2


def test_report_round_trips() -> None:
    report = study(FIXTURES / "faq.tsv", "faq.tsv", goal="answer questions")
    assert StudyReport.model_validate_json(report.model_dump_json()) == report


def test_study_modules_stay_light() -> None:
    code = (
        "import sys, forged.brain.study, forged.api.brain; "
        "bad = [m for m in ('torch', 'transformers', 'numpy', 'pandas', 'pyarrow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
