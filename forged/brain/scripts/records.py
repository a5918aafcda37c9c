"""Reading a user's data file into records: CSV, TSV, JSON (one-line arrays too), JSONL and plain text.

Stdlib-only, like rows.py: the processing scripts Forge writes carry this module's source, so a file reads
the same inside forged's sandbox, in the daemon and on the user's machine.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from forged.brain.scripts.rows import EXAMPLE_RECORD, DataError, column_spellings, known_layout

SourceFormat = Literal["csv", "tsv", "json", "jsonl", "text"]

_TEXT_EXTENSIONS = (".txt", ".text", ".md")

# How report.json and prepare's notes name a JSONL record cut off at the end of the file.
TRUNCATED = "truncated last record"

# Below this many usable examples a validation split would starve training and tell us nothing.
MIN_EXAMPLES_FOR_VAL = 10

_JSON_SHAPE_HINT = f"give flat records like {EXAMPLE_RECORD} without deep nesting or giant numbers"

# --------------------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------------------

# Signatures of files people upload by mistake; naming the real format makes the fix obvious.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "is a zip archive (an Excel .xlsx workbook?): open it and export it as 'CSV UTF-8'"),
    (b"\x1f\x8b", "is gzip-compressed: decompress it first (gunzip) and give the .csv/.jsonl inside"),
    (b"PAR1", "is a Parquet file: convert it to JSONL or CSV first"),
    (b"%PDF", "is a PDF: extract the examples into a CSV with prompt,response columns"),
    (b"SQLite format 3", "is a SQLite database: export the table as CSV first"),
)

_WRAPPER_KEYS = frozenset({"data", "train", "examples", "records", "rows", "items", "dataset"})

# Python's default (128 KiB) rejects long documents in a single cell; real datasets have them.
_CSV_FIELD_LIMIT = 2**31 - 1
# Bytes per read while checking a file before streaming it: a large file is never held whole for the check.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Parsed:
    """A file's records and what parsing it found out about the file itself."""

    records: list[dict[str, Any]]
    format: SourceFormat
    # A JSONL file whose last record stops mid-way (an interrupted export): that record's line number; the
    # record is not in `records`. 0 when the file ends cleanly.
    truncated_line: int = 0
    delimiter: str = ""  # the separator of a CSV/TSV file


def load_records(
    path: Path, name: str, dropped: Counter[str] | None = None
) -> tuple[list[dict[str, Any]], SourceFormat]:
    """Read `path` (uploaded as `name`) into a list of records and report the format it really is.

    A last JSONL line cut off mid-record (an interrupted export) is dropped and counted in `dropped`; with
    no `dropped` it is refused, naming the line.
    """
    return parse_records(read_text(path, name), name, dropped)


class RecordStream:
    """A file's records one at a time, so a million-row CSV or JSONL file never sits in memory whole.

    Yields exactly the records `load_records` returns, in order. `count` is how many were yielded so far and
    `truncated_line` (known once the stream is exhausted) the line of a cut-off last JSONL record, which is
    left out as `load_records` leaves it out. A JSON document (an array, a wrapper object) and a .txt/.md
    file are parsed whole: neither can be cut into records before it is read to the end.
    """

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.count = 0
        self.truncated_line = 0
        _check_text_file(path, name)
        ext = Path(name).suffix.lower()
        self._whole: Parsed | None = None
        with path.open(encoding="utf-8-sig", newline="\n") as f:
            first, skipped = _first_content_line(f)
        head = first.lstrip()[:1]
        if head == "{" and _is_jsonl(path, first, skipped):
            self.format: SourceFormat = "jsonl"
        elif head in ("[", "{") or ext in (*_TEXT_EXTENSIONS, ".json", ".jsonl", ".ndjson"):
            self._whole = parse(read_text(path, name), name)
            self.format = self._whole.format
            self.truncated_line = self._whole.truncated_line
        else:
            delimiter = _sniff_delimiter(_csv_header(path), ext)
            if delimiter is None:
                raise DataError(_no_columns(name))
            self.format = "tsv" if delimiter == "\t" else "csv"
            self._delimiter = delimiter

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._whole is not None:
            records: Iterator[dict[str, Any]] = iter(self._whole.records)
        elif self.format == "jsonl":
            records = self._jsonl()
        else:
            records = self._csv()
        for record in records:
            self.count += 1
            yield record

    def _csv(self) -> Iterator[dict[str, Any]]:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
        with self.path.open(encoding="utf-8-sig", newline="") as f:
            # A leading blank line would be taken for an empty header.
            skipped = 0
            start = f.tell()
            while (line := f.readline()) and not line.strip("\r\n"):
                skipped += line.count("\n")
                start = f.tell()
            f.seek(start)  # back to the header, so the reader reads the file itself, not a Python generator
            reader = csv.reader(f, delimiter=self._delimiter)
            try:
                yield from _dict_rows(reader)
            except csv.Error as exc:
                raise DataError(
                    f"{self.name} is not valid CSV near line {reader.line_num + skipped} ({exc}): check the "
                    "quoting on that line (a cell containing commas or newlines must be wrapped in double "
                    "quotes)"
                ) from None
        if not self.count:
            raise DataError(
                f"{self.name} has a header but no rows: add at least {MIN_EXAMPLES_FOR_VAL} examples below "
                "the header"
            )

    def _jsonl(self) -> Iterator[dict[str, Any]]:
        # Lines end at \n only: JSON allows U+2028 and a lone \r inside a record's strings and spacing.
        with self.path.open(encoding="utf-8-sig", newline="\n") as f:
            reader = _JsonlReader(f, self.name)
            yield from reader
            self.truncated_line = reader.truncated_line
        if not self.count:
            require_records([], self.name)


class _JsonlReader:
    """The records of a JSONL stream, one at a time. A last record that stops mid-way (the file lost its end
    in transit; the rest of it is still good) ends the records and sets `truncated_line`; a bad line anywhere
    else, or one the file ends cleanly after, is the user's to fix."""

    def __init__(self, f: TextIO, name: str) -> None:
        self.f, self.name = f, name
        self.truncated_line = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for lineno, raw in enumerate(self.f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                rest = self.f.read()
                if not rest.strip() and not (raw + rest).endswith("\n"):
                    self.truncated_line = lineno
                    return
                raise DataError(_bad_jsonl_line(self.name, lineno, exc)) from None
            except (ValueError, RecursionError) as exc:
                raise DataError(_bad_jsonl_line(self.name, lineno, exc)) from None
            if not isinstance(rec, dict):
                raise DataError(_not_an_object(self.name, f"line {lineno}", rec))
            yield rec


def _no_columns(name: str) -> str:
    return (
        f"{name} looks like plain text without columns: name it .txt to train on it as plain text "
        "(continued pre-training), or give a CSV with a header row such as prompt,response"
    )


def _csv_header(path: Path) -> str:
    """The first line after any leading line breaks, as `_sniff_delimiter` reads it from the whole text."""
    with path.open(encoding="utf-8-sig", newline="\n") as f:
        for line in f:
            if line.strip("\r\n"):
                return line
    return ""


def _first_content_line(f: TextIO) -> tuple[str, int]:
    """The first line that is not blank, and how many lines came before it."""
    skipped = 0
    for line in f:
        if line.strip():
            return line, skipped
        skipped += 1
    return "", skipped


def _is_jsonl(path: Path, first: str, skipped: int) -> bool:
    """One JSON object a line: the first record parses on its own and something follows it. Anything else
    that starts with "{" (a pretty-printed document, one object alone) is read whole, as `parse` reads it."""
    try:
        json.loads(first)
    except (ValueError, RecursionError):
        return False
    with path.open(encoding="utf-8-sig", newline="\n") as f:
        for _ in range(skipped + 1):
            f.readline()
        return any(line.strip() for line in f)


def _check_text_file(path: Path, name: str) -> None:
    """Refuse what `decode_utf8` refuses, reading the file in chunks; the message comes from `read_text`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fine, blank = True, True
    try:
        with path.open("rb") as f:
            head = f.read(_CHUNK)
            fine = not head.startswith((b"\xff\xfe", b"\xfe\xff", *(magic for magic, _ in _MAGIC)))
            chunk = head.removeprefix(codecs.BOM_UTF8)
            while fine and chunk:
                fine = b"\x00" not in chunk
                decoder.decode(chunk)
                blank = blank and chunk.isspace()
                chunk = f.read(_CHUNK)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        fine = False
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror or exc}; check the path and permissions") from exc
    if not fine or blank:
        read_text(path, name)  # raises the one-line message, naming the offset and line of a bad byte


def _bad_jsonl_line(name: str, lineno: int, exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return (
            f"{name} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}): fix or remove that "
            f"line; each line must be one object like {EXAMPLE_RECORD}"
        )
    return f"{name} line {lineno} cannot be read as JSON ({_short(exc)}): {_JSON_SHAPE_HINT}"


def peek_records(
    path: Path, name: str, max_bytes: int = 1 << 20
) -> tuple[list[dict[str, Any]], SourceFormat]:
    """The records of the file's first `max_bytes` (whole lines only), to choose a mapping from.

    A JSON document cannot be cut, so one is read whole; so is a file that fits. A cut-off last JSONL record
    is left out, as the script leaves it out.
    """
    with path.open("rb") as f:
        head = f.read(max_bytes + 1)
    if len(head) <= max_bytes or head.lstrip()[:1] == b"[":
        return load_records(path, name, Counter())
    cut = head[: head.rfind(b"\n") + 1] or head
    records, fmt = parse_records(decode_utf8(cut, name), name)
    # The last row of a CSV cut inside a quoted multi-line cell may be partial.
    return (records[:-1] if len(records) > 1 else records), fmt


def parse_records(
    text: str, name: str, dropped: Counter[str] | None = None
) -> tuple[list[dict[str, Any]], SourceFormat]:
    """`parse` for callers that want the records only: see `load_records` for `dropped`."""
    parsed = parse(text, name)
    if parsed.truncated_line:
        if dropped is None:
            raise cut_off(name, parsed.truncated_line)
        dropped[TRUNCATED] += 1
    return parsed.records, parsed.format


def cut_off(name: str, line: int) -> DataError:
    """The error for a JSONL file whose last record, on `line`, stops mid-way."""
    return DataError(
        f"{name} line {line} is not valid JSON: the last record stops mid-way, as if the file was cut off; "
        "remove that line or export the file again"
    )


def parse(text: str, name: str) -> Parsed:
    """The records in `text` (the file uploaded as `name`): CSV, TSV, JSON, JSONL or plain text."""
    ext = Path(name).suffix.lower()
    head = text.lstrip()[:1]

    if head in ("[", "{"):
        # Content wins over the extension: a .jsonl can be one JSON array on one line and vice versa.
        parsed = _try_json_document(text)
        if parsed is not None:
            records, fmt = _records_from_document(parsed, name, ext)
            return Parsed(require_records(records, name), fmt)
        if head == "{":
            records, truncated = _parse_jsonl(text, name)
            return Parsed(require_records(records, name), "jsonl", truncated)
        if ext not in (".csv", ".tsv", ".tab", ".txt"):
            _raise_json_error(text, name)

    if ext in (".json", ".jsonl", ".ndjson"):
        first = text.lstrip().split("\n", 1)[0][:40]
        raise DataError(
            f"{name} is not JSON (it starts with {first!r}): give a JSON array of objects or one object "
            f"per line like {EXAMPLE_RECORD}, or rename the file to .csv if it is CSV"
        )

    delimiter = _sniff_delimiter(text, ext)
    if ext in _TEXT_EXTENSIONS:
        # Excel's "Text (Tab delimited)" export is a .txt too: a table only if its header names a layout.
        table = _parse_csv(text, name, delimiter) if delimiter else []
        if delimiter and table and known_layout(column_spellings(table)):
            return Parsed(table, "tsv" if delimiter == "\t" else "csv", delimiter=delimiter)
        return Parsed(_documents(text), "text")
    if delimiter is None:
        raise DataError(_no_columns(name))
    records = _parse_csv(text, name, delimiter)
    if not records:
        raise DataError(
            f"{name} has a header but no rows: add at least {MIN_EXAMPLES_FOR_VAL} examples below the header"
        )
    return Parsed(records, "tsv" if delimiter == "\t" else "csv", delimiter=delimiter)


_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")


def _documents(text: str) -> list[dict[str, Any]]:
    """A plain-text file as documents, one per blank-line-separated paragraph.

    Blank lines are the only structure plain text has, and splitting there (as Hugging Face datasets'
    paragraph mode does) gives a held-out validation split and length stats that describe the data, where a
    single document would give neither. The runner ends each document with EOS, so a paragraph end becomes
    a place the model may stop; to keep a long work as one document, give JSONL with one {"text": ...} each.
    """
    paragraphs = (p.strip("\n") for p in _BLANK_LINES.split(text.replace("\r\n", "\n")))
    # decode_utf8 already refused a file with nothing but whitespace, so at least one paragraph is left.
    return [{"text": p} for p in paragraphs if p.strip()]


def read_text(path: Path, name: str) -> str:
    """The file as text: UTF-8 (with or without a byte-order mark) only, as the scripts read it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror or exc}; check the path and permissions") from exc
    return decode_utf8(data, name)


def refuse_non_text(data: bytes, name: str) -> None:
    """Refuse an empty file, or one whose first bytes say it is an archive, a PDF or a database."""
    # A lone UTF-8 byte-order mark is what Excel writes for an empty sheet.
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise DataError(
            f"{name} is empty: add a header row (e.g. prompt,response) and at least "
            f"{MIN_EXAMPLES_FOR_VAL} examples"
        )
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise DataError(f"{name} {what}")


def decode_utf8(data: bytes, name: str) -> str:
    # forged transcodes other encodings to UTF-8 before a script runs (forged/brain/normalize.py); a user
    # running the script on their own file is told how to re-save it.
    refuse_non_text(data, name)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name} is UTF-16 text: re-save it as UTF-8 (in Excel: Save As → 'CSV UTF-8')")
    if b"\x00" in data:
        raise DataError(
            f"{name} looks like a binary file (it contains NUL bytes), not text: export your data as "
            "CSV or JSONL in UTF-8 (if it is UTF-16 text, re-save it as UTF-8)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{name} is not valid UTF-8: byte 0x{bad} at offset {exc.start} (line {line}) cannot be "
            "decoded; re-save the file as UTF-8 (in Excel: Save As → 'CSV UTF-8')"
        ) from None
    return text.removeprefix("\ufeff")


def _try_json_document(text: str) -> Any | None:
    try:
        return json.loads(text)
    # ValueError covers JSONDecodeError and Python's cap on huge integer literals.
    except (ValueError, RecursionError):
        return None


def _records_from_document(doc: Any, name: str, ext: str) -> tuple[list[Any], SourceFormat]:
    if isinstance(doc, list):
        return doc, "json"
    if isinstance(doc, dict):
        # {"data": [...]} and friends: the list under a wrapper key is the dataset. Only known wrapper
        # names, because a single chat record ({"messages": [...]}) also holds a list of objects.
        wrapped = [k for k in doc if isinstance(k, str) and k.lower() in _WRAPPER_KEYS]
        if len(wrapped) == 1 and isinstance(doc[wrapped[0]], list):
            return doc[wrapped[0]], "json"
        # Otherwise it is one record: a one-line JSONL file, or a .json holding a single example.
        return [doc], "jsonl" if ext in (".jsonl", ".ndjson") else "json"
    raise DataError(
        f"{name} holds a single JSON {_json_type(doc)}, not records: give a JSON array of objects or one "
        f"object per line like {EXAMPLE_RECORD}"
    )


def _raise_json_error(text: str, name: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; fix that spot "
            "(often a missing comma, quote or bracket) or export the file again"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{name} cannot be read as JSON ({_short(exc)}): {_JSON_SHAPE_HINT}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _parse_jsonl(text: str, name: str) -> tuple[list[dict[str, Any]], int]:
    """The records, and the line number of a last record that was cut off (0 if none)."""
    # newline="\n": split on \n only, as a file opened that way is; U+2028 may sit inside JSON strings.
    reader = _JsonlReader(io.StringIO(text, newline="\n"), name)
    return list(reader), reader.truncated_line


def require_records(records: list[Any], name: str) -> list[dict[str, Any]]:
    if not records:
        raise DataError(
            f"{name} has no records: add at least {MIN_EXAMPLES_FOR_VAL} objects like {EXAMPLE_RECORD}"
        )
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise DataError(_not_an_object(name, f"record {i}", rec))
    return records


def _not_an_object(name: str, where: str, value: Any) -> str:
    return (
        f"{where} of {name} is a JSON {_json_type(value)}, not an object: each record must be an object "
        f"like {EXAMPLE_RECORD}"
    )


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _sniff_delimiter(text: str, ext: str) -> str | None:
    if ext in (".tsv", ".tab"):
        return "\t"
    header = text.lstrip("\r\n").split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        # A one-column file cannot hold a prompt and an answer; .csv is reported as an unknown layout.
        return "," if ext == ".csv" else None
    # Prefer the comma on ties: it is what the file claims to be, and Excel's ';' only wins outright.
    return "," if counts[","] == counts[best] else best


def _parse_csv(text: str, name: str, delimiter: str) -> list[dict[str, Any]]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    # A leading blank line would be taken for an empty header.
    body = text.lstrip("\r\n")
    skipped = text.count("\n", 0, len(text) - len(body))
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        return list(_dict_rows(reader))
    except csv.Error as exc:
        raise DataError(
            f"{name} is not valid CSV near line {reader.line_num + skipped} ({exc}): check the quoting on "
            "that line (a cell containing commas or newlines must be wrapped in double quotes)"
        ) from None


def _dict_rows(reader: Iterator[list[str]]) -> Iterator[dict[str, Any]]:
    """csv.DictReader's records (header row as keys), without its per-row Python overhead, which was a
    fifth of a script's time on a million rows. Blank lines are skipped; a short row gets None for its
    missing cells (which counts as empty), a long row's extra cells go under the key None."""
    header = next(reader, None)
    if header is None:
        return
    width = len(header)
    for row in reader:
        if len(row) == width:
            yield dict(zip(header, row, strict=True))
        elif row:
            record = dict(zip(header, row, strict=False))
            if len(row) > width:
                record[None] = row[width:]  # type: ignore[index]
            else:
                record.update(dict.fromkeys(header[len(row) :]))
            yield record
