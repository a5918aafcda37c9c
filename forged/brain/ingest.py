"""Turn a user's raw data file into training JSONL (train/val) plus the stats the planner needs.

Two row kinds come out: chat rows `{"messages": [{"role", "content", "weight"?}, ...]}` for fine-tuning and
document rows `{"text": "..."}` for continued pre-training. The runner (runner_image/data.py) reads both.

Everything here runs inside the daemon, so it uses only the standard library and pydantic (plus pyarrow for
Parquet and charset-normalizer for non-UTF-8 text, both imported only when a file needs them): no torch, no
pandas. Every problem with the user's file surfaces as a `DataError` whose text is one line saying what is
wrong and how to fix it; the gRPC layer maps it to INVALID_ARGUMENT and the CLI prints it as is.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from forged.brain.decode import Decoded, DecodeError, decode

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str
    # OpenAI's per-message weight, kept only on assistant turns: 0 shows the turn as context but does not
    # train it. Absent means trained.
    weight: NotRequired[Literal[0, 1]]


# A plain list of dicts, not a pydantic model: a million rows must not pay for per-message validation.
Conversation = list[Message]
# One document for continued pre-training: the runner tokenizes it whole and trains on every token.
Document = str
Example = Conversation | Document

SourceFormat = Literal["csv", "tsv", "json", "jsonl", "parquet", "text"]

TEXT_LAYOUT = "text"
# Columns that may sit next to "text" in pre-training dumps (RedPajama, Dolma) without being content.
_TEXT_METADATA = frozenset({"id", "meta", "metadata", "source", "url"})
# Extensions whose content is prose unless its first line is a header naming a known layout.
_TEXT_EXTENSIONS = (".txt", ".text", ".md")

# Below this many usable examples a validation split would starve training and tell us nothing.
MIN_EXAMPLES_FOR_VAL = 10

_ACCEPTED_LAYOUTS = (
    "prompt/response, instruction/output (+input), instruction/response (+context), prompt/completion, "
    "question/answer or input/output columns, or a messages/conversations list"
)
_EXAMPLE_RECORD = '{"prompt": "...", "response": "..."}'
_JSON_SHAPE_HINT = f"give flat records like {_EXAMPLE_RECORD} without deep nesting or giant numbers"


class DataError(ValueError):
    """A problem with the user's data. str() is one line: what is wrong, then what to do about it."""

    def __init__(self, message: str) -> None:
        # File names and column names come from the user and may hold newlines; the CLI wants one line.
        super().__init__(" ".join(message.splitlines()))


class DatasetStats(BaseModel):
    """Mirrors forge.v1.DatasetStats field for field, so the gRPC layer can copy it across."""

    model_config = ConfigDict(frozen=True)

    rows_in: int = Field(ge=0)
    train_examples: int = Field(ge=0)
    val_examples: int = Field(ge=0)
    dropped: int = Field(ge=0)
    dropped_reasons: dict[str, int] = Field(default_factory=dict)
    layout: str
    source_format: str
    chars_p50: int = Field(ge=0)
    chars_p95: int = Field(ge=0)
    chars_max: int = Field(ge=0)


class PreparedData(BaseModel):
    """Mirrors forge.v1.PrepareResponse; train_data/val_data are local paths the gRPC layer stores as
    artifacts and replaces with their digests."""

    model_config = ConfigDict(frozen=True)

    train_data: Path
    val_data: Path
    stats: DatasetStats
    brain: str = "offline"


# --------------------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------------------

# Signatures of files people upload by mistake; naming the real format makes the fix obvious.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "is a zip archive (an Excel .xlsx workbook?): open it and export it as 'CSV UTF-8'"),
    (b"\x1f\x8b", "is gzip-compressed: decompress it first (gunzip) and give the .csv/.jsonl inside"),
    (b"%PDF", "is a PDF: extract the examples into a CSV with prompt,response columns"),
    (b"SQLite format 3", "is a SQLite database: export the table as CSV first"),
)

_WRAPPER_KEYS = frozenset({"data", "train", "examples", "records", "rows", "items", "dataset"})

# Python's default (128 KiB) rejects long documents in a single cell; real datasets have them.
_CSV_FIELD_LIMIT = 2**31 - 1


_PARQUET_MAGIC = b"PAR1"
# Rows per Arrow record batch: bounded memory for the columnar buffers of a wide file.
_PARQUET_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Loaded:
    """A user's file read into records, and what reading it found out about the file itself."""

    records: list[dict[str, Any]]
    format: SourceFormat
    encoding: str  # the text encoding ("utf-8", "cp1252", ...); "binary" for Parquet
    # A JSONL file whose last record stops mid-way (an interrupted export): its line number, and the record
    # is not in `records`. 0 when the file ends cleanly.
    truncated_line: int = 0
    delimiter: str = ""  # the separator of a CSV/TSV file


def load_records(path: Path, name: str) -> tuple[list[dict[str, Any]], SourceFormat]:
    """Read `path` (uploaded as `name`) into a list of records and report the format it really is.

    A JSONL file cut off in its last record is refused here; `read_data` reports it instead, for callers
    that drop and count it."""
    loaded = read_data(path, name)
    if loaded.truncated_line:
        raise DataError(
            f"{name} line {loaded.truncated_line} is not valid JSON: the last record stops mid-way, as if "
            "the file was cut off; remove that line or export the file again"
        )
    return loaded.records, loaded.format


def read_data(path: Path, name: str) -> Loaded:
    """Read `path` (uploaded as `name`): CSV, TSV, JSON, JSONL, Parquet or plain text, in any common
    encoding. Every problem is a one-line DataError."""
    if _starts_with(path, _PARQUET_MAGIC):
        return Loaded(_require_records(_read_parquet(path, name), name), "parquet", "binary")
    decoded = _read_text(path, name)
    text = decoded.text
    ext = Path(name).suffix.lower()
    head = text.lstrip()[:1]

    if head in ("[", "{"):
        # Content wins over the extension: a .jsonl can be one JSON array on one line and vice versa.
        parsed = _try_json_document(text)
        if parsed is not None:
            records, fmt = _records_from_document(parsed, name, ext)
            return Loaded(_require_records(records, name), fmt, decoded.encoding)
        if head == "{":
            records, truncated = _parse_jsonl(text, name)
            return Loaded(_require_records(records, name), "jsonl", decoded.encoding, truncated)
        if ext not in (".csv", ".tsv", ".tab", ".txt"):
            _raise_json_error(text, name)

    if ext in (".json", ".jsonl", ".ndjson"):
        first = text.lstrip().split("\n", 1)[0][:40]
        raise DataError(
            f"{name} is not JSON (it starts with {first!r}): give a JSON array of objects or one object "
            f"per line like {_EXAMPLE_RECORD}, or rename the file to .csv if it is CSV"
        )

    delimiter = _sniff_delimiter(text, ext)
    if ext in _TEXT_EXTENSIONS:
        # Excel's "Text (Tab delimited)" export is a .txt too: a table only if its header names a layout.
        table = _parse_csv(text, name, delimiter) if delimiter else []
        if table and _known_layout(_column_spellings(table)):
            return Loaded(table, "tsv" if delimiter == "\t" else "csv", decoded.encoding, delimiter=delimiter)
        return Loaded(_documents(text), "text", decoded.encoding)
    if delimiter is None:
        raise DataError(
            f"{name} looks like plain text without columns: name it .txt to train on it as plain text "
            "(continued pre-training), or give a CSV with a header row such as prompt,response"
        )
    records = _parse_csv(text, name, delimiter)
    fmt: SourceFormat = "tsv" if delimiter == "\t" else "csv"
    if not records:
        raise DataError(
            f"{name} has a header but no rows: add at least {MIN_EXAMPLES_FOR_VAL} examples below the header"
        )
    return Loaded(records, fmt, decoded.encoding, delimiter=delimiter)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(magic)) == magic
    except OSError as exc:
        raise DataError(
            f"cannot read {path.name}: {exc.strerror or exc}; check the path and permissions"
        ) from exc


def _read_parquet(path: Path, name: str) -> list[dict[str, Any]]:
    # Imported here: only Parquet uploads pay for pyarrow, and the daemon starts without it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            records.extend(batch.to_pylist())
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{name} cannot be read as Parquet ({_short(exc)}): the file is damaged or not Parquet; export "
            "it again, or give CSV or JSONL"
        ) from None
    return records


_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")


def _documents(text: str) -> list[dict[str, Any]]:
    """A plain-text file as documents, one per blank-line-separated paragraph.

    Blank lines are the only structure plain text has, and splitting there (as Hugging Face datasets'
    paragraph mode does) gives a held-out validation split and length stats that describe the data, where a
    single document would give neither. The runner ends each document with EOS, so a paragraph end becomes
    a place the model may stop; to keep a long work as one document, give JSONL with one {"text": ...} each.
    """
    paragraphs = (p.strip("\n") for p in _BLANK_LINES.split(text.replace("\r\n", "\n")))
    # _read_text already refused a file with nothing but whitespace, so at least one paragraph is left.
    return [{"text": p} for p in paragraphs if p.strip()]


def _read_text(path: Path, name: str) -> Decoded:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror or exc}; check the path and permissions") from exc

    # A lone UTF-8 byte-order mark is what Excel writes for an empty sheet.
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise DataError(
            f"{name} is empty: add a header row (e.g. prompt,response) and at least "
            f"{MIN_EXAMPLES_FOR_VAL} examples"
        )
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise DataError(f"{name} {what}")
    try:
        decoded = decode(data)
    except DecodeError as exc:
        raise DataError(f"{name} {exc}") from None
    if not decoded.text.strip():  # a UTF-16 byte-order mark and nothing else
        raise DataError(
            f"{name} is empty: add a header row (e.g. prompt,response) and at least "
            f"{MIN_EXAMPLES_FOR_VAL} examples"
        )
    return decoded


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
        f"object per line like {_EXAMPLE_RECORD}"
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
    records: list[dict[str, Any]] = []
    # Split on \n only: str.splitlines() would also split on U+2028, which JSON allows inside strings.
    lines = text.split("\n")
    last = max((i for i, raw in enumerate(lines, start=1) if raw.strip()), default=0)
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            # An interrupted export stops inside the last object; a typo elsewhere is the user's to fix.
            if lineno == last and lineno > 1 and not line.endswith("}"):
                return records, lineno
            raise DataError(
                f"{name} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}): fix or remove "
                f"that line; each line must be one object like {_EXAMPLE_RECORD}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(
                f"{name} line {lineno} cannot be read as JSON ({_short(exc)}): {_JSON_SHAPE_HINT}"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(_not_an_object(name, f"line {lineno}", rec))
        records.append(rec)
    return records, 0


def _require_records(records: list[Any], name: str) -> list[dict[str, Any]]:
    if not records:
        raise DataError(
            f"{name} has no records: add at least {MIN_EXAMPLES_FOR_VAL} objects like {_EXAMPLE_RECORD}"
        )
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise DataError(_not_an_object(name, f"record {i}", rec))
    return records


def _not_an_object(name: str, where: str, value: Any) -> str:
    return (
        f"{where} of {name} is a JSON {_json_type(value)}, not an object: each record must be an object "
        f"like {_EXAMPLE_RECORD}"
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
    # DictReader would take a leading blank line as an empty header.
    body = text.lstrip("\r\n")
    skipped = text.count("\n", 0, len(text) - len(body))
    reader = csv.DictReader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        # Blank lines are skipped; short rows get None for missing cells, which counts as empty.
        return list(reader)
    except csv.Error as exc:
        raise DataError(
            f"{name} is not valid CSV near line {reader.line_num + skipped} ({exc}): check the quoting on "
            "that line (a cell containing commas or newlines must be wrapped in double quotes)"
        ) from None


# --------------------------------------------------------------------------------------------------------
# Mapping records to conversations
# --------------------------------------------------------------------------------------------------------

_ROLE_MAP: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}

# Placeholders people write instead of leaving alpaca's optional input empty, compared once _SQUASH has
# removed spaces, brackets and dots ("< No input. >" -> "noinput").
_PLACEHOLDERS = frozenset(
    {
        "",
        "noinput",
        "noinputneeded",
        "noinputrequired",
        "noinputprovided",
        "n/a",
        "na",
        "none",
        "null",
        "nan",
        "empty",
    }
)
_SQUASH = re.compile(r"[\s<>\[\]().\-_'\"]+")

# Degenerate, looping answers (e.g. one phrase repeated 26 KB) teach a model to loop. Compressing only
# long answers keeps this check off the hot path for typical rows.
_REPETITION_MIN_CHARS = 2000
_REPETITION_RATIO = 20


@dataclass(frozen=True)
class _FlatLayout:
    prompt: str
    answer: str
    extras: tuple[str, ...] = ()  # optional second half of the prompt (alpaca input, dolly context)


_FLAT_LAYOUTS: tuple[_FlatLayout, ...] = (
    _FlatLayout("instruction", "output", ("input", "context")),
    _FlatLayout("instruction", "response", ("context", "input")),
    _FlatLayout("prompt", "response"),
    _FlatLayout("prompt", "completion"),
    _FlatLayout("question", "answer"),
    _FlatLayout("input", "output"),
)


def to_examples(
    records: Sequence[Mapping[str, Any]], name: str = "the data"
) -> tuple[list[Example], str, Counter[str]]:
    """Map records in a known layout to conversations (or documents); unusable rows are dropped and counted.

    Problems that are the file's layout rather than a row's (tool-call turns, a weight other than 0 or 1)
    stop the whole file with a DataError, because dropping them would silently train something else.
    """
    results, layout = row_results(records, name)
    dropped: Counter[str] = Counter()
    examples = _collect(results, dropped)
    if not examples:
        raise DataError(_nothing_usable_message(name, len(records), dropped))
    return examples, layout, dropped


def row_results(
    records: Sequence[Mapping[str, Any]], name: str = "the data"
) -> tuple[list[Example | Dropped], str]:
    """Each record's example, or why it cannot be one (a `Dropped`), in file order, and the layout's name.

    What `to_examples` builds on, for callers (study) that report which rows fail and why. Raises the same
    file-level DataErrors."""
    spellings = _column_spellings(records)
    system_keys = spellings.get("system", ())

    def system_of(rec: Mapping[str, Any]) -> str:
        return _text(_get(rec, system_keys)) if system_keys else ""

    results: list[Example | Dropped]
    if "messages" in spellings or "conversations" in spellings:
        key = "messages" if "messages" in spellings else "conversations"
        layout = key + ("+system" if system_keys else "")
        _reject_tool_calls(records, spellings[key], name)
        results = [
            _from_turns(_get(rec, spellings[key]), system_of(rec), f"record {i} of {name}")
            for i, rec in enumerate(records, start=1)
        ]
    elif _is_text_layout(spellings):
        layout = TEXT_LAYOUT
        text_keys = spellings["text"]
        results = [_from_text(_get(rec, text_keys)) for rec in records]
    else:
        flat = _match_flat_layout(spellings)
        if flat is None:
            raise DataError(_unknown_layout_message(spellings, name))
        extra = next((e for e in flat.extras if e in spellings), None)
        parts = [flat.prompt] + ([extra] if extra else []) + [flat.answer]
        layout = "/".join(parts) + ("+system" if system_keys else "")
        prompt_keys, answer_keys = spellings[flat.prompt], spellings[flat.answer]
        extra_keys = spellings[extra] if extra else ()
        results = [
            _from_flat(
                _text(_get(rec, prompt_keys)),
                _text(_get(rec, extra_keys)) if extra_keys else "",
                _text(_get(rec, answer_keys)),
                system_of(rec),
            )
            for rec in records
        ]
    return results, layout


class Dropped(str):
    """Why a record was dropped (a str subclass, so it cannot be mistaken for a document)."""


def _collect(results: Iterable[Example | Dropped], dropped: Counter[str]) -> list[Example]:
    examples: list[Example] = []
    for result in results:
        if isinstance(result, Dropped):
            dropped[str(result)] += 1
        else:
            examples.append(result)
    return examples


def _column_spellings(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Lower-cased column name → the spellings used in the file, so lookups are case-insensitive."""
    # JSON records may each have different keys, so look at all of them; CSV rows repeat one header,
    # which the key-set cache makes cheap.
    keysets = dict.fromkeys(tuple(rec) for rec in records)
    seen: dict[str, list[str]] = {}
    for keys in keysets:
        for key in keys:
            if isinstance(key, str):
                spelled = seen.setdefault(key.strip().lower(), [])
                if key not in spelled:
                    spelled.append(key)
    return {k: tuple(v) for k, v in seen.items() if k}


def _get(rec: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = rec.get(key)
        if value is not None:
            return value
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value).strip()


def _match_flat_layout(spellings: Mapping[str, tuple[str, ...]]) -> _FlatLayout | None:
    for flat in _FLAT_LAYOUTS:
        if flat.prompt in spellings and flat.answer in spellings:
            return flat
    return None


def is_placeholder(text: str) -> bool:
    return len(text) <= 24 and _SQUASH.sub("", text.lower()) in _PLACEHOLDERS


def _is_repetitive(text: str) -> bool:
    if len(text) < _REPETITION_MIN_CHARS:
        return False
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 1)) * _REPETITION_RATIO < len(raw)


def _is_text_layout(spellings: Mapping[str, tuple[str, ...]]) -> bool:
    # Only "text" (plus metadata): a text column beside a label or a category is a classification set,
    # which trained as prose would silently learn nothing useful.
    return "text" in spellings and set(spellings) - {"text"} <= _TEXT_METADATA


def _known_layout(spellings: Mapping[str, tuple[str, ...]]) -> bool:
    return (
        "messages" in spellings
        or "conversations" in spellings
        or _is_text_layout(spellings)
        or _match_flat_layout(spellings) is not None
    )


def _from_text(value: Any) -> Document | Dropped:
    if not isinstance(value, str):
        return Dropped("non-text document") if value is not None else Dropped("empty text")
    # Only surrounding blank lines go: a document's first-line indentation can be content (code, verse).
    doc = value.strip("\r\n")
    if not doc.strip():
        return Dropped("empty text")
    if _is_repetitive(doc):
        return Dropped("repetitive text")
    return doc


def _from_flat(prompt: str, extra: str, answer: str, system: str) -> Conversation | Dropped:
    if not answer:
        return Dropped("empty response")
    if not prompt:
        return Dropped("empty prompt")
    if _is_repetitive(answer):
        return Dropped("repetitive response")
    if extra and not is_placeholder(extra):
        prompt = f"{prompt}\n\n{extra}"
    conv: Conversation = []
    if system:
        conv.append({"role": "system", "content": system})
    conv.append({"role": "user", "content": prompt})
    conv.append({"role": "assistant", "content": answer})
    return conv


# Roles of tool-calling data: LLaMA-Factory/ShareGPT's function_call/observation, OpenAI's tool/function.
_TOOL_ROLES = frozenset(
    {"function_call", "observation", "tool", "function", "tool_call", "tool_response", "ipython"}
)
# Keys that carry tool calls or tool schemas inside OpenAI-style records and turns.
_TOOL_KEYS = ("tool_calls", "function_call")
_TOOL_RECORD_KEYS = frozenset({"tools", "functions"})
_NO_TOOLS: tuple[Any, ...] = (None, "", "[]", [])


def _reject_tool_calls(records: Sequence[Mapping[str, Any]], turn_keys: tuple[str, ...], name: str) -> None:
    """Refuse tool-calling data with one line that says why and what to do.

    Forge trains through the model's own chat template, and tool calls are where templates differ most
    (Qwen's <tool_call> tags, Llama 3's ipython role, Mistral's [TOOL_CALLS] with 9-character ids; SmolLM2,
    TinyLlama and Phi-3 have no tool format at all). Flattening calls into plain assistant text would train
    a format no runtime parses; dropping those conversations would silently train a different model (the
    plain answers in such sets were written with the tools in view). So the whole file stops here.
    """
    tool_records, signs = tool_call_use(records, turn_keys)
    if tool_records:
        what = ", ".join(sign if sign.startswith("a ") else f"'{sign}'" for sign, _ in signs.most_common(4))
        raise DataError(
            f"{tool_records} of {len(records)} conversations in {name} use tool calling ({what}), which "
            "Forge cannot train yet: every model family formats tool calls differently; remove those "
            "conversations (and any tools field) to train on the plain chats, or write each call out as "
            "ordinary user/assistant text"
        )


def tool_call_use(
    records: Sequence[Mapping[str, Any]], turn_keys: tuple[str, ...]
) -> tuple[int, Counter[str]]:
    """How many records use tool calling, and the signs of it ('function_call', 'a tools field') by count."""
    tool_records = 0
    signs: Counter[str] = Counter()
    for rec in records:
        found = {role for role in map(_tool_role, _as_list(_get(rec, turn_keys))) if role}
        found |= {
            f"a {k} field" for k in rec if str(k).lower() in _TOOL_RECORD_KEYS and rec[k] not in _NO_TOOLS
        }
        if found:
            tool_records += 1
            signs.update(found)
    return tool_records, signs


def _as_list(turns: Any) -> list[Any]:
    if isinstance(turns, str):
        with contextlib.suppress(json.JSONDecodeError):
            turns = json.loads(turns)
    return turns if isinstance(turns, list) else []


def _tool_role(turn: Any) -> str:
    """The turn's role if it is part of a tool call (a tool role, or a turn carrying tool_calls), else ""."""
    if not isinstance(turn, dict):
        return ""
    role = str(turn.get("role", turn.get("from", ""))).strip()[:40]
    if role.lower() in _TOOL_ROLES:
        return role
    key = next((k for k in _TOOL_KEYS if turn.get(k)), None)
    return f"{role} with {key}" if key else ""


def _weight(turn: Mapping[str, Any], role: Role, index: int, where: str) -> Literal[0, 1] | None:
    """The turn's OpenAI-style weight, or None when it has none. Bad values stop the whole file."""
    if "weight" not in turn or turn["weight"] is None:
        return None
    weight = turn["weight"]
    # bool is an int in Python, but JSON's true is not what anyone means by a weight of 1.
    if isinstance(weight, bool) or weight not in (0, 1):
        raise DataError(
            f"{where}: message {index} has weight {json.dumps(weight)[:40]}; a weight must be 0 (show "
            "the turn but do not train it) or 1 (train it)"
        )
    if weight == 1 and role != "assistant":
        raise DataError(
            f"{where}: message {index} is a {role} turn with weight 1, but only assistant turns are "
            "trained; remove its weight"
        )
    return 1 if weight == 1 else 0


def _from_turns(turns: Any, system: str, where: str) -> Conversation | Dropped:
    """OpenAI `messages` (role/content/weight) or ShareGPT `conversations` (from/value)."""
    if isinstance(turns, str):
        # CSV exports store the list as a JSON string.
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            return Dropped("malformed messages")
    if not isinstance(turns, list):
        return Dropped("malformed messages")
    conv: Conversation = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return Dropped("malformed messages")
        raw_role = turn.get("role", turn.get("from"))
        if not isinstance(raw_role, str):
            return Dropped("malformed messages")
        role = _ROLE_MAP.get(raw_role.strip().lower())
        if role is None:
            return Dropped(f"unsupported role '{raw_role.strip()[:40]}'")
        weight = _weight(turn, role, index, where)
        content = _turn_content(turn.get("content", turn.get("value")))
        if content is None:
            return Dropped("non-text content")
        if not content:
            if role == "system":
                continue
            return Dropped("empty response" if role == "assistant" else "empty prompt")
        if role == "assistant" and _is_repetitive(content):
            return Dropped("repetitive response")
        message: Message = {"role": role, "content": content}
        if role == "assistant" and weight is not None:
            message["weight"] = weight
        conv.append(message)

    if not any(m["role"] == "assistant" for m in conv):
        return Dropped("no assistant turn" if any(m["role"] == "user" for m in conv) else "no user turn")
    # Turns after the last trained answer carry no training signal; cut them rather than lose the record.
    while conv and not _trained(conv[-1]):
        conv.pop()
    if not conv:
        return Dropped("every assistant turn has weight 0")
    if not any(m["role"] == "user" for m in conv):
        return Dropped("no user turn")
    if system and conv[0]["role"] != "system":
        conv.insert(0, {"role": "system", "content": system})
    return conv


def _trained(message: Message) -> bool:
    return message["role"] == "assistant" and message.get("weight", 1) == 1


def _turn_content(content: Any) -> str | None:
    """A turn's text, or None when it carries something other than text (images, audio)."""
    if content is None or isinstance(content, str):
        return _text(content)
    if isinstance(content, list):
        # OpenAI content parts: [{"type": "text", "text": "..."}, ...]
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
            else:
                return None
        return "\n".join(texts).strip()
    if isinstance(content, (int, float)):
        return str(content)
    return None


def _unknown_layout_message(spellings: Mapping[str, tuple[str, ...]], name: str) -> str:
    columns = [s[0] for s in spellings.values()]
    shown = ", ".join(columns[:20]) + (f", … ({len(columns)} in all)" if len(columns) > 20 else "")
    return (
        f"no known column layout in {name} (columns: {shown or 'none'}); rename columns to "
        "prompt/response, instruction/output, question/answer, or give a messages list"
    )


def _nothing_usable_message(name: str, rows: int, dropped: Counter[str]) -> str:
    reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.most_common(4))
    return (
        f"no usable examples in {name}: all {rows} records were dropped ({reasons}); fix those records "
        "so each has a non-empty prompt and answer (or text, for plain-text data)"
    )


# --------------------------------------------------------------------------------------------------------
# Prepare: records → train.jsonl / val.jsonl + stats
# --------------------------------------------------------------------------------------------------------


def prepare(path: Path, name: str, out_dir: Path, seed: int, val_fraction: float = 0.1) -> PreparedData:
    """Convert the user's file to training JSONL in out_dir (train.jsonl, val.jsonl) with a seeded split."""
    if not 0.0 <= val_fraction <= 0.5:
        raise DataError(f"val_fraction {val_fraction} is out of range: use a value between 0 and 0.5")
    records, fmt = load_records(path, name)
    examples, layout, dropped = to_examples(records, name)

    n = len(examples)
    n_val = _val_count(n, val_fraction)
    # sample() on a range keeps only the chosen indices: O(n_val) memory even for a million rows.
    val_idx = set(random.Random(seed).sample(range(n), n_val))

    lengths = sorted(_chars(example) for example in examples)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.jsonl", out_dir / "val.jsonl"
    _write_split(examples, val_idx, train_path, val_path)

    stats = DatasetStats(
        rows_in=len(records),
        train_examples=n - n_val,
        val_examples=n_val,
        dropped=len(records) - n,
        dropped_reasons=dict(dropped.most_common()),
        layout=layout,
        source_format=fmt,
        chars_p50=_percentile(lengths, 0.50),
        chars_p95=_percentile(lengths, 0.95),
        chars_max=lengths[-1],
    )
    return PreparedData(train_data=train_path, val_data=val_path, stats=stats)


def _chars(example: Example) -> int:
    return len(example) if isinstance(example, str) else sum(len(m["content"]) for m in example)


def _row(example: Example) -> dict[str, Any]:
    return {"text": example} if isinstance(example, str) else {"messages": example}


def _val_count(n: int, val_fraction: float) -> int:
    if n < MIN_EXAMPLES_FOR_VAL or val_fraction <= 0:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    # Nearest-rank: always an observed length, so "95% are under X" is literally true.
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _write_split(examples: Sequence[Example], val_idx: set[int], train_path: Path, val_path: Path) -> None:
    """Write both files to temp names first and rename at the end, so readers never see half a split."""
    finals = (train_path, val_path)
    tmp_paths: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            handles = []
            for final in finals:
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
                tmp_paths.append(Path(tmp))
                handles.append(stack.enter_context(os.fdopen(fd, "w", encoding="utf-8", newline="\n")))
            train_f, val_f = handles
            for i, example in enumerate(examples):
                line = json.dumps(_row(example), ensure_ascii=False)
                (val_f if i in val_idx else train_f).write(line + "\n")
            for f in handles:
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in zip(tmp_paths, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)
