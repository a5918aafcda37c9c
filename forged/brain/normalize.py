"""Turn a user's file into what a processing script reads: UTF-8 text, or JSONL for Parquet.

The scripts (forged/brain/scripts/) are stdlib-only, so they read UTF-8 CSV, TSV, JSON, JSONL and text and
nothing else. The daemon closes the gap before a script runs: text in another encoding (UTF-16 from Excel,
Windows-1252 from Notepad) is transcoded with the encoding decode.py detects, and Parquet becomes one JSON
record a line. A UTF-8 file is used as it is, without a copy. Study reads through here too (`read_data`), so
study and prepare see the same records, parsed by the same scripts/records.py.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forged.brain.decode import DecodeError, decode
from forged.brain.scripts.records import parse, read_text, refuse_non_text, require_records
from forged.brain.scripts.rows import DataError

PARQUET_MAGIC = b"PAR1"
# Rows per Arrow record batch: bounded memory for the columnar buffers of a wide file.
_PARQUET_BATCH_ROWS = 65_536
# Bytes per read while checking that a file is UTF-8: a large upload is never held whole for the check.
_CHUNK = 1 << 20
# How many leading bytes identify a file (magic numbers, byte-order marks).
_HEAD = 64

LoadedFormat = Literal["csv", "tsv", "json", "jsonl", "parquet", "text"]


@dataclass(frozen=True)
class Normalized:
    path: Path  # the user's file itself when it is UTF-8 already, else a converted copy
    encoding: str  # the original's text encoding ("utf-8", "cp1252", ...); "binary" for Parquet
    parquet: bool = False


@dataclass(frozen=True)
class Loaded:
    """A user's file read into records, and what reading it found out about the file itself."""

    records: list[dict[str, Any]]
    format: LoadedFormat
    encoding: str  # the text encoding ("utf-8", "cp1252", ...); "binary" for Parquet
    # A JSONL file whose last record stops mid-way (an interrupted export): its line number, and the record
    # is not in `records`. 0 when the file ends cleanly.
    truncated_line: int = 0
    delimiter: str = ""  # the separator of a CSV/TSV file


def normalize(path: Path, name: str, work: Path) -> Normalized:
    """`path` (uploaded as `name`) as a file a processing script can read; copies go into `work`."""
    head = _head(path, name)
    if head.startswith(PARQUET_MAGIC):
        out = work / "normalized.jsonl"
        _parquet_to_jsonl(path, name, out)
        return Normalized(out, "binary", parquet=True)
    if _is_utf8(path, head):
        return Normalized(path, "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8")
    data = path.read_bytes()
    # An archive or a PDF is named for what it is, not called text in an odd encoding.
    refuse_non_text(data, name)
    try:
        decoded = decode(data)
    except DecodeError as exc:
        raise DataError(f"{name} {exc}") from None
    out = work / "normalized.txt"  # the script is told the upload's name separately
    out.write_text(decoded.text, encoding="utf-8", newline="")
    return Normalized(out, decoded.encoding)


def read_data(path: Path, name: str) -> Loaded:
    """Read `path` (uploaded as `name`): CSV, TSV, JSON, JSONL, Parquet or plain text, in any common
    encoding, into the records a processing script would see. Every problem is a one-line DataError."""
    with tempfile.TemporaryDirectory(prefix="forge-read-") as work:
        normalized = normalize(path, name, Path(work))
        parsed = parse(read_text(normalized.path, name), name)
    fmt: LoadedFormat = "parquet" if normalized.parquet else parsed.format
    return Loaded(parsed.records, fmt, normalized.encoding, parsed.truncated_line, parsed.delimiter)


def _head(path: Path, name: str) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(_HEAD)
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror or exc}; check the path and permissions") from exc


def _is_utf8(path: Path, head: bytes) -> bool:
    """Strict UTF-8 all through, without NUL bytes (which only UTF-16/32 text or binary data hold)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # UTF-32's marks start with these too
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                if b"\x00" in chunk:
                    return False
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _parquet_to_jsonl(path: Path, name: str, out: Path) -> None:
    # Imported here: only Parquet uploads pay for pyarrow, and the daemon starts without it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    try:
        with out.open("w", encoding="utf-8", newline="\n") as f:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    # Dates, decimals and bytes have no JSON type: their text is what a prompt would hold.
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                    rows += 1
    except (pa.ArrowException, OSError) as exc:
        text = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(
            f"{name} cannot be read as Parquet ({text}): the file is damaged or not Parquet; export it "
            "again, or give CSV or JSONL"
        ) from None
    if not rows:
        require_records([], name)
