"""The command line of every processing script Forge writes: read the input, convert, write the output.

Stdlib-only (pasted into the script). The contract that forged relies on, for its own scripts and for any
script a brain or a user writes: `python SCRIPT --input FILE --output DIR` writes `DIR/prepared.jsonl`, one
`{"messages": [...]}` or `{"text": ...}` record a line, and may write `DIR/report.json` ({"rows_in",
"dropped_reasons", "layout", "source_format", "notes"}); a file that cannot serve exits 2 with one line on
stderr saying why.
"""

from __future__ import annotations

import argparse
import json
import json.encoder
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forged.brain.scripts.records import TRUNCATED, RecordStream
from forged.brain.scripts.rows import DataError, Example, Message, examples, layout_label, sql_schemas

OUTPUT_NAME = "prepared.jsonl"
REPORT_NAME = "report.json"

# One encoder for every row: json.dumps with options builds a new one per call. The rows are built here
# from strings, so there is no cycle to check for.
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
# The string encoder _ENCODE uses (C), for building the common records directly.
_QUOTE = json.encoder.encode_basestring


def encode_example(example: Example) -> str:
    """The output line of an example: exactly what _ENCODE writes for {"text": ...} or {"messages": [...]},
    a third faster, because the general encoder's setup per call cost more than a short row's strings."""
    if isinstance(example, str):
        return '{"text": ' + _QUOTE(example) + "}"
    return '{"messages": [' + ", ".join([_encode_message(m) for m in example]) + "]}"


def _encode_message(message: Message) -> str:
    if len(message) == 2 and tuple(message) == ("role", "content"):
        return '{"role": ' + _QUOTE(message["role"]) + ', "content": ' + _QUOTE(message["content"]) + "}"
    return _ENCODE(message)  # a weight, or anything unusual


def main(argv: Sequence[str], mapping: Mapping[str, Any]) -> int:
    parser = argparse.ArgumentParser(description="Turn a data file into chat/text training JSONL.")
    parser.add_argument(
        "--input", required=True, type=Path, help="the data file (UTF-8 CSV, TSV, JSON, JSONL, text)"
    )
    parser.add_argument("--output", required=True, type=Path, help="directory for prepared.jsonl")
    parser.add_argument("--name", help="the file's original name, for messages (default: the input's)")
    args = parser.parse_args(argv)
    name = args.name or args.input.name
    try:
        report = run(args.input, name, args.output, mapping)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept, dropped = report["examples"], sum(report["dropped_reasons"].values())
    print(f"wrote {kept} examples to {args.output / OUTPUT_NAME}; dropped {dropped}")
    return 0


def run(path: Path, name: str, out_dir: Path, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Stream `path` through the rules into out_dir/prepared.jsonl, one record at a time; the output is
    removed again when the file turns out to be unusable, so a failed run leaves no half-written file."""
    dropped: Counter[str] = Counter()
    records = RecordStream(path, name)
    schemas, notes = _schemas(path, mapping)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / OUTPUT_NAME
    kept = 0
    try:
        with output.open("w", encoding="utf-8", newline="\n") as f:
            write = f.write
            for example in examples(records, mapping, name, schemas, dropped):
                write(encode_example(example))
                write("\n")
                kept += 1
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    if records.truncated_line:
        dropped[TRUNCATED] += 1
    report = {
        "rows_in": records.count + dropped[TRUNCATED],
        "examples": kept,
        "dropped_reasons": dict(dropped.most_common()),
        "layout": layout_label(mapping),
        "source_format": records.format,
        "notes": notes,
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def _schemas(path: Path, mapping: Mapping[str, Any]) -> tuple[dict[str, str] | None, list[str]]:
    """Spider's schemas from the side file beside the input, or None with a note saying why not."""
    if mapping["layout"] != "sql":
        return None, []
    side = mapping.get("schema_file")
    if not side:
        return None, [
            "no tables.json was given, so prompts hold the question without the database schema and the "
            "model must learn each database's tables from the queries alone; give tables.json beside the "
            "data to join each database's schema into its prompts"
        ]
    schema_path = path.parent / str(side)
    try:
        tables = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the schema file {side} beside the data ({exc}): give Spider's tables.json"
        ) from None
    schemas = sql_schemas(tables)
    return schemas, [f"joined the schema of {len(schemas)} databases from {side} into the prompts by db_id"]
