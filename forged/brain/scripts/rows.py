"""Forge's rules for turning records into training examples: one place, shared by the daemon and the scripts.

This module is stdlib-only on purpose. `forged.brain.ingest` imports it, and `forged.brain.scripts.render`
pastes its source into every processing script Forge writes, so the script a user reads and re-runs without
Forge applies exactly the rules the daemon applies. Imports from other forged modules are not allowed here.
"""

from __future__ import annotations

import contextlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

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

TEXT_LAYOUT = "text"
# Columns that may sit next to "text" in pre-training dumps (RedPajama, Dolma) without being content.
_TEXT_METADATA = frozenset({"id", "meta", "metadata", "source", "url"})

EXAMPLE_RECORD = '{"prompt": "...", "response": "..."}'


class DataError(ValueError):
    """A problem with the user's data. str() is one line: what is wrong, then what to do about it."""

    def __init__(self, message: str) -> None:
        # File names and column names come from the user and may hold newlines; the CLI wants one line.
        super().__init__(" ".join(message.splitlines()))


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


# The layouts a mapping can name. "flat": one prompt column (+ optional context) and one answer column;
# "messages": OpenAI role/content turns; "sharegpt": from/value turns; "text": documents for continued
# pre-training; "sql": Spider-style question -> query, with the database schema joined into the prompt.
LAYOUTS = ("flat", "messages", "sharegpt", "text", "sql")


def detect(records: Sequence[Mapping[str, Any]], name: str, side_files: Sequence[str] = ()) -> dict[str, Any]:
    """The column mapping Forge's own rules choose for these records: what the offline brain answers."""
    spellings = column_spellings(records)
    system = "system" if "system" in spellings else None
    if "messages" in spellings:
        return {"layout": "messages", "turns": "messages", "system": system}
    if "conversations" in spellings:
        return {"layout": "sharegpt", "turns": "conversations", "system": system}
    if _is_text_layout(spellings):
        return {"layout": "text", "text": "text"}
    if {"question", "query", "db_id"} <= set(spellings):
        schema = "tables.json" if "tables.json" in side_files else None
        return {"layout": "sql", "prompt": "question", "response": "query", "schema_file": schema}
    flat = _match_flat_layout(spellings)
    if flat is None:
        raise DataError(_unknown_layout_message(spellings, name))
    extra = next((e for e in flat.extras if e in spellings), None)
    return {
        "layout": "flat",
        "prompt": flat.prompt,
        "context": extra,
        "response": flat.answer,
        "system": system,
    }


def layout_label(mapping: Mapping[str, Any]) -> str:
    """How a report names the mapping, e.g. "instruction/input/output+system"."""
    kind = mapping["layout"]
    if kind == "text":
        return TEXT_LAYOUT
    if kind in ("messages", "sharegpt"):
        label = str(mapping["turns"]).lower()
    elif kind == "sql":
        label = f"{mapping['prompt']}/{mapping['response']}".lower() + (
            "+schema" if mapping.get("schema_file") else ""
        )
    else:
        parts = [mapping["prompt"], mapping.get("context"), mapping["response"]]
        label = "/".join(str(p).lower() for p in parts if p)
    return label + ("+system" if mapping.get("system") else "")


def convert(
    records: Iterable[Mapping[str, Any]],
    mapping: Mapping[str, Any],
    name: str = "the data",
    schemas: Mapping[str, str] | None = None,
) -> tuple[list[Example], Counter[str]]:
    """Map records to conversations (or documents) as `mapping` says; unusable rows are dropped and counted.

    Problems that are the file's layout rather than a row's (tool-call turns, a weight other than 0 or 1, a
    mapped column the file does not have) stop the whole file with a DataError, because dropping them would
    silently train something else. `schemas` maps a Spider db_id to its schema text (see `sql_schemas`).
    A text mapping with `chunk_tokens` cuts long documents into pieces of about that many tokens.
    """
    dropped: Counter[str] = Counter()
    return list(examples(records, mapping, name, schemas, dropped)), dropped


def examples(
    records: Iterable[Mapping[str, Any]],
    mapping: Mapping[str, Any],
    name: str,
    schemas: Mapping[str, str] | None,
    dropped: Counter[str],
) -> Iterator[Example]:
    """`convert` one record at a time, counting drops into `dropped`: what a script streams to its output.
    The file-level DataErrors come when the records run out, so a caller writes to a file it can discard."""
    rows = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal rows
        for rec in records:
            rows += 1
            yield rec

    results: Iterable[Example | Dropped] = iter_row_results(counted(), mapping, name, schemas)
    if mapping["layout"] == "text":
        chunk_chars = int(
            int(mapping.get("chunk_tokens") or 0) * float(mapping.get("chars_per_token") or 4.0)
        )
        results = (piece for result in results for piece in _chunks(result, chunk_chars))
    kept = 0
    for result in results:
        if isinstance(result, Dropped):
            dropped[str(result)] += 1
        else:
            kept += 1
            yield result
    if not kept:
        raise DataError(_nothing_usable_message(name, rows, dropped))


def row_results(
    records: Sequence[Mapping[str, Any]],
    mapping: Mapping[str, Any],
    name: str = "the data",
    schemas: Mapping[str, str] | None = None,
) -> list[Example | Dropped]:
    """Each record's example under `mapping`, or why it cannot be one (a `Dropped`), in file order.

    What `convert` builds on, for callers (study) that report which rows fail and why. Raises the same
    file-level DataErrors; documents are not chunked here.
    """
    return list(iter_row_results(records, mapping, name, schemas))


class _Columns:
    """Where each of the mapping's columns is in a record, matched case-insensitively.

    JSON records may each spell a column differently, so the spellings seen so far are kept in the order
    they first appear (a record holding two spellings takes the first one with a value); CSV rows repeat one
    header, which the cache by key set makes cheap. A mapped column that no record has is a DataError.
    """

    def __init__(self, wanted: Mapping[str, Any], required: Sequence[str]) -> None:
        self._wanted = {role: str(column).strip().lower() for role, column in wanted.items() if column}
        self._required = [role for role in required if role in self._wanted]
        self._found: set[str] = set()
        self.spellings: dict[str, list[str]] = {}
        self._by_keyset: dict[tuple[Any, ...], dict[str, tuple[str, ...]]] = {}

    def of(self, rec: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        keyset = tuple(rec)
        found = self._by_keyset.get(keyset)
        if found is None:
            for key in keyset:
                if isinstance(key, str) and key.strip():
                    spelled = self.spellings.setdefault(key.strip().lower(), [])
                    if key not in spelled:
                        spelled.append(key)
            present = set(keyset)
            found = {
                role: tuple(k for k in self.spellings.get(column, ()) if k in present)
                for role, column in self._wanted.items()
            }
            self._found.update(role for role, keys in found.items() if keys)
            self._by_keyset[keyset] = found
        return found

    def check(self, mapping: Mapping[str, Any], name: str) -> None:
        """Raise for the first required column that no record had."""
        for role in self._required:
            if role not in self._found:
                shown = ", ".join(s[0] for s in list(self.spellings.values())[:20])
                raise DataError(
                    f"the mapping's {role} column {mapping[role]!r} is not in {name} (columns: {shown}); "
                    "choose one of those columns"
                )


def iter_row_results(
    records: Iterable[Mapping[str, Any]],
    mapping: Mapping[str, Any],
    name: str = "the data",
    schemas: Mapping[str, str] | None = None,
) -> Iterator[Example | Dropped]:
    """`row_results` one record at a time. File-level problems are raised once the records run out, in
    the order a whole-file check would find them: a missing column, tool calls, a bad weight."""
    kind = mapping["layout"]
    if kind not in LAYOUTS:
        raise DataError(f"unknown layout {kind!r} in the mapping: use one of {', '.join(LAYOUTS)}")
    # The columns whose absence stops the file, in the order they are reported.
    required = {
        "messages": ("turns",),
        "sharegpt": ("turns",),
        "text": ("text",),
        "sql": ("prompt", "response"),
    }
    roles = ("system", "turns", "text", "prompt", "response", "context")
    wanted = {role: mapping.get(role) for role in roles} | ({"db_id": "db_id"} if kind == "sql" else {})
    columns = _Columns(wanted, required.get(kind, ("prompt", "response", "context")))
    repetitive = _is_repetitive if mapping.get("drop_repetitive", True) else _never
    placeholders = mapping.get("placeholders_as_empty", True)
    system_key = "system" if mapping.get("system") else ""
    if kind in ("messages", "sharegpt"):
        total = tool_records = 0
        signs: Counter[str] = Counter()
        weight_error: DataError | None = None
        for rec in records:
            total += 1
            found = columns.of(rec)
            turns = _get(rec, found.get("turns", ()))
            sign = _tool_signs(rec, turns)
            if sign:
                tool_records += 1
                signs.update(sign)
            if tool_records or weight_error:
                continue  # the file is refused at the end; only the count of tool-call records matters
            system = _text(_get(rec, found.get("system", ()))) if system_key else ""
            try:
                yield _from_turns(turns, system, f"record {total} of {name}", repetitive)
            except DataError as exc:
                weight_error = exc
        columns.check(mapping, name)
        if tool_records:
            raise DataError(_tool_calls_message(tool_records, total, signs, name))
        if weight_error:
            raise weight_error
        return
    for rec in records:
        found = columns.of(rec)
        if kind == "text":
            yield _from_text(_get(rec, found.get("text", ())), repetitive)
        elif kind == "sql":
            yield _from_sql(
                _text(_get(rec, found.get("prompt", ()))),
                _text(_get(rec, found.get("response", ()))),
                _text(_get(rec, found.get("db_id", ()))),
                schemas,
            )
        else:
            yield _from_flat(
                _text(_get(rec, found.get("prompt", ()))),
                _text(_get(rec, found.get("context", ()))),
                _text(_get(rec, found.get("response", ()))),
                _text(_get(rec, found.get("system", ()))) if system_key else "",
                repetitive,
                placeholders,
            )
    columns.check(mapping, name)


def sql_schemas(tables: Any) -> dict[str, str]:
    """Spider's tables.json as {db_id: "table(col type, ...)" lines}: the schema a SQL prompt needs."""
    if not isinstance(tables, list):
        raise DataError("tables.json is not a JSON list of databases: give Spider's tables.json as it ships")
    schemas: dict[str, str] = {}
    for db in tables:
        if not isinstance(db, dict) or "db_id" not in db:
            continue
        names = db.get("table_names_original") or db.get("table_names") or []
        columns = db.get("column_names_original") or db.get("column_names") or []
        types = db.get("column_types") or []
        per_table: list[list[str]] = [[] for _ in names]
        for i, col in enumerate(columns):
            if (
                isinstance(col, list)
                and len(col) == 2
                and isinstance(col[0], int)
                and 0 <= col[0] < len(names)
            ):
                typed = f"{col[1]} {types[i]}" if i < len(types) else str(col[1])
                per_table[col[0]].append(typed)
        schemas[str(db["db_id"])] = "\n".join(
            f"{table}({', '.join(cols)})" for table, cols in zip(names, per_table, strict=True)
        )
    return schemas


def _from_sql(
    question: str, query: str, db_id: str, schemas: Mapping[str, str] | None
) -> Conversation | Dropped:
    if not query:
        return Dropped("empty response")
    if not question:
        return Dropped("empty prompt")
    # Spider's queries space tokens inconsistently ("T1.id  =  T2.id"); one space keeps the targets uniform.
    query = " ".join(query.split())
    if schemas is None:
        return [{"role": "user", "content": question}, {"role": "assistant", "content": query}]
    schema = schemas.get(db_id)
    if schema is None:
        return Dropped("database not in tables.json")
    prompt = f"Database {db_id}:\n{schema}\n\nQuestion: {question}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": query}]


def _never(text: str) -> bool:
    return False


def _chunks(doc: Document | Dropped, max_chars: int) -> list[Document | Dropped]:
    """Cut a document longer than `max_chars` at line breaks (a chunk is about max_seq_len tokens)."""
    if isinstance(doc, Dropped) or max_chars <= 0 or len(doc) <= max_chars:
        return [doc]
    pieces: list[Document | Dropped] = []
    current = ""
    for line in doc.splitlines(keepends=True):
        while len(line) > max_chars:  # one enormous line: cut it where it must be cut
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if isinstance(p, Dropped) or p.strip()]


class Dropped(str):
    """Why a record was dropped (a str subclass, so it cannot be mistaken for a document)."""


def column_spellings(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
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
        return json.dumps(value, ensure_ascii=False)
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


def known_layout(spellings: Mapping[str, tuple[str, ...]]) -> bool:
    return (
        "messages" in spellings
        or "conversations" in spellings
        or _is_text_layout(spellings)
        or _match_flat_layout(spellings) is not None
    )


def _from_text(value: Any, repetitive: Callable[[str], bool] = _is_repetitive) -> Document | Dropped:
    if not isinstance(value, str):
        return Dropped("non-text document") if value is not None else Dropped("empty text")
    # Only surrounding blank lines go: a document's first-line indentation can be content (code, verse).
    doc = value.strip("\r\n")
    if not doc.strip():
        return Dropped("empty text")
    if repetitive(doc):
        return Dropped("repetitive text")
    return doc


def _from_flat(
    prompt: str,
    extra: str,
    answer: str,
    system: str,
    repetitive: Callable[[str], bool] = _is_repetitive,
    placeholders: bool = True,
) -> Conversation | Dropped:
    if not answer:
        return Dropped("empty response")
    if not prompt:
        return Dropped("empty prompt")
    if repetitive(answer):
        return Dropped("repetitive response")
    if extra and not (placeholders and is_placeholder(extra)):
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


def _tool_calls_message(tool_records: int, total: int, signs: Counter[str], name: str) -> str:
    """Refuse tool-calling data with one line that says why and what to do.

    Forge trains through the model's own chat template, and tool calls are where templates differ most
    (Qwen's <tool_call> tags, Llama 3's ipython role, Mistral's [TOOL_CALLS] with 9-character ids; SmolLM2,
    TinyLlama and Phi-3 have no tool format at all). Flattening calls into plain assistant text would train
    a format no runtime parses; dropping those conversations would silently train a different model (the
    plain answers in such sets were written with the tools in view). So the whole file stops.
    """
    what = ", ".join(sign if sign.startswith("a ") else f"'{sign}'" for sign, _ in signs.most_common(4))
    return (
        f"{tool_records} of {total} conversations in {name} use tool calling ({what}), which "
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
        found = _tool_signs(rec, _get(rec, turn_keys))
        if found:
            tool_records += 1
            signs.update(found)
    return tool_records, signs


def _tool_signs(rec: Mapping[str, Any], turns: Any) -> set[str]:
    """The signs of tool calling in one record whose turns are `turns`: tool roles, a tools field."""
    found = {role for role in map(_tool_role, _as_list(turns)) if role}
    found |= {f"a {k} field" for k in rec if str(k).lower() in _TOOL_RECORD_KEYS and rec[k] not in _NO_TOOLS}
    return found


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


def _from_turns(
    turns: Any, system: str, where: str, repetitive: Callable[[str], bool] = _is_repetitive
) -> Conversation | Dropped:
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
        if role == "assistant" and repetitive(content):
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
    if not alternates(conv):
        return Dropped("non-alternating turns")
    return conv


def example_text(example: Example) -> str:
    """The words an example trains on, without roles or markup: what lengths and languages are measured on."""
    return example if isinstance(example, str) else "\n".join(m["content"] for m in example)


def alternates(conv: Sequence[Mapping[str, Any]]) -> bool:
    """An optional system turn first, then user and assistant by turns, starting with the user."""
    roles = [m.get("role") for m in conv]
    if roles[:1] == ["system"]:
        roles = roles[1:]
    return bool(roles) and all(
        role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles)
    )


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
