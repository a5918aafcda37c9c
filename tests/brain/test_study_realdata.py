"""study() over the real public datasets. Needs FORGE_REALDATA=/path/to/shared/datasets."""

from __future__ import annotations

from pathlib import Path

from forge.study_report import Finding, StudyReport

from forged.brain.study import study


def run(realdata: Path, rel: str, goal: str = "") -> StudyReport:
    path = realdata / rel
    assert path.is_file(), f"{rel} is missing under {realdata}"
    report = study(path, path.name, goal=goal)
    # Whatever the file, the report is whole: counts add up and the lengths were measured.
    assert report.rows > 0 and report.tokens.measured > 0
    assert 0 < report.tokens.p50 <= report.tokens.p95 <= report.tokens.p99 <= report.tokens.max
    assert StudyReport.model_validate_json(report.model_dump_json()) == report
    return report


def need(report: StudyReport, code: str) -> Finding:
    found = report.finding(code)
    assert found is not None, f"no {code} finding; got {[f.code for f in report.findings]}"
    return found


def test_alpaca(realdata: Path) -> None:
    report = run(realdata, "alpaca/alpaca_5000.json")
    assert (report.format, report.rows, report.layout, report.kind) == (
        "json",
        5000,
        "instruction/input/output",
        "chat",
    )
    roles = {c.name: c.role for c in report.columns}
    assert roles == {"instruction": "prompt", "input": "context", "output": "response"}
    assert next(c for c in report.columns if c.name == "input").empty == 3057
    assert need(report, "optional_empty").rows == 3057
    placeholders = need(report, "placeholder_values")
    assert placeholders.rows >= 47 and "'No input'" in placeholders.examples
    empty = need(report, "empty_response")
    assert (empty.rows, empty.severity) == (2, "warning") and report.usable_rows == 4998
    # The planner's default model is `tiny`, whose real tokenizer ships with the runner.
    assert not report.tokens.estimate and "SmolLM2" in report.tokens.tokenizer
    assert report.languages[0].code == "en" and report.languages[0].share > 0.9


def test_openai_toy_chat_flaws_flagged(realdata: Path) -> None:
    report = run(realdata, "openai_toy_chat_messages/toy_chat_fine_tuning.jsonl", goal="cheer people up")
    assert (report.layout, report.rows, report.usable_rows) == ("messages", 5, 3)
    assert need(report, "no_user_turn").row_numbers == [4]
    loop = need(report, "repetitive_response")
    assert (
        loop.row_numbers == [5]
        and "Eat a banana!" in loop.examples[0]
        and "26,000 characters" in loop.examples[0]
    )
    assert need(report, "missing_system").row_numbers == [3]
    assert report.target is not None and report.target.found and report.target.target == "messages"


def test_glaive_tool_calls_flagged(realdata: Path) -> None:
    report = run(realdata, "llamafactory_glaive_toolcall_en/glaive_toolcall_en_demo.json")
    tools = need(report, "tool_calls")
    assert (tools.severity, tools.rows) == ("error", 191)
    assert "'function_call'" in tools.what and "'observation'" in tools.what and "a tools field" in tools.what
    assert {c.name: c.role for c in report.columns} == {"conversations": "conversation", "tools": "nested"}


def test_spider_query_is_the_target_and_tables_json_is_named(realdata: Path) -> None:
    report = run(realdata, "spider_dev/dev.json", goal="write the SQL query that answers a question")
    assert report.target is not None and report.target.found
    assert (report.target.target, report.target.prompt) == ("query", ["question"])
    assert "SQL" in report.target.reason
    assert "tables.json" in need(report, "schema_elsewhere").fix
    assert "sql" in need(report, "nested").what
    roles = {c.name: c.role for c in report.columns}
    assert roles["sql"] == "nested" and roles["question"] == "prompt"


def test_customer_tickets(realdata: Path) -> None:
    report = run(realdata, "customer_support_tickets/customer_support_tickets.csv", goal="summarize tickets")
    assert (report.format, report.rows, report.kind) == ("csv", 8469, "table")
    placeholders = need(report, "placeholders")
    assert placeholders.rows > 1000 and "{product_purchased}" in placeholders.examples
    assert need(report, "html").rows > 0
    assert need(report, "replacement_characters").rows == 4
    assert {p.kind: p.rows for p in report.pii}["email"] == 8469
    assert need(report, "duplicate_values").what.startswith("392 rows repeat an earlier 'Ticket Description'")
    target = report.target
    assert target is not None and not target.found
    assert target.reason.startswith("no natural target for 'summarize tickets': no column holds summaries")
    assert "'Resolution' is empty in 5,700 of 8,469 rows" in target.reason
    assert need(report, "no_target").severity == "error"
    roles = {c.name: c.role for c in report.columns}
    assert roles["Ticket Description"] == "free text" and roles["Ticket Type"] == "label"
    assert roles["Ticket ID"] == "id" and roles["Customer Email"] == "metadata"


def test_tinyshakespeare_is_text_for_continued_pretraining(realdata: Path) -> None:
    report = run(realdata, "tinyshakespeare/input.txt", goal="write like Shakespeare")
    assert (report.format, report.kind, report.layout) == ("text", "text", "text")
    assert report.target is not None and report.target.found and report.target.target == "text"
    assert "continued pre-training" in report.target.reason
    assert report.languages[0].code == "en"


def test_dolly(realdata: Path) -> None:
    report = run(realdata, "dolly15k_sample/databricks-dolly-15k.first12.jsonl", goal="answer questions")
    assert (report.layout, report.usable_rows) == ("instruction/context/response", 12)
    assert {c.name: c.role for c in report.columns}["category"] == "label"
    assert report.target is not None and report.target.target == "response"
