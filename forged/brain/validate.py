"""Check what a processing script wrote before anything trains on it.

A script may come from an LLM, so its output is checked record by record: the schema (chat
`{"messages": [...]}` or `{"text": ...}`), non-empty turns, roles that alternate after an optional system
turn, an assistant turn after every user turn, weights only on assistant turns. A structural fault fails the
whole output (it goes back to the brain for a repair); a chat example longer than the plan's max_seq_len is
dropped and counted instead, because a handful of long rows in good data is not the script's fault.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from forged.brain.scripts.rows import alternates
from forged.brain.split import near_duplicate_key

_ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content", "weight"})
_TEXT_KEYS = frozenset({"text"})
_CHAT_KEYS = frozenset({"messages"})
_SHOWN_ERRORS = 3
TOO_LONG = "longer than max_seq_len"


class OutputInvalid(ValueError):
    """The script's output breaks the training-row contract. str() is one line."""


@dataclass
class ValidOutput:
    """What validation learnt about a script's output file, without holding its records: a million rows
    cost a few bytes each here, and the records are read again from `path` for the split."""

    path: Path
    keep: bytearray = field(default_factory=bytearray)  # per line of the file: 1 = a valid example kept
    keys: array[int] = field(default_factory=lambda: array("q"))  # near-duplicate keys for the split
    chars: array[int] = field(default_factory=lambda: array("q"))
    kinds: Counter[str] = field(default_factory=Counter)  # chat / text
    dropped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.keys)

    def lines(self) -> Iterator[bytes]:
        """The kept records as written (UTF-8 JSON, no line break), in file order."""
        with self.path.open("rb") as f:
            for raw, kept in zip(f, self.keep, strict=False):
                if kept:
                    yield raw.rstrip(b"\r\n")


def validate_output(
    path: Path, *, max_seq_len: int = 0, chars_per_token: float = 4.0, min_examples: int = 1
) -> ValidOutput:
    if not path.is_file():
        raise OutputInvalid(f"the script wrote no {path.name}: it must write one JSON record a line there")
    limit = int(max_seq_len * chars_per_token) if max_seq_len else 0
    out = ValidOutput(path)
    errors: list[str] = []
    bad = 0
    keep, keys, lengths, kinds = out.keep, out.keys, out.chars, out.kinds
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                # orjson: several times faster than json here, and stricter (invalid UTF-8, lone surrogates).
                record = orjson.loads(raw)
                kind, chars = _check(record)
            except (ValueError, UnicodeDecodeError) as exc:
                keep.append(0)
                if not raw.decode("utf-8", "replace").strip():
                    continue  # a blank line
                bad += 1
                if len(errors) < _SHOWN_ERRORS:
                    errors.append(f"line {lineno}: {exc}")
                continue
            if limit and kind == "chat" and chars > limit:
                keep.append(0)
                out.dropped[TOO_LONG] += 1
                continue
            keep.append(1)
            keys.append(near_duplicate_key(record))
            lengths.append(chars)
            kinds[kind] += 1
    if bad:
        more = f" (and {bad - len(errors)} more)" if bad > len(errors) else ""
        raise OutputInvalid(f"{bad} invalid records in {path.name}: " + "; ".join(errors) + more)
    if len(out) < min_examples:
        raise OutputInvalid(
            f"{path.name} holds {len(out)} usable examples; at least {min_examples} are needed"
        )
    return out


def _check(record: Any) -> tuple[str, int]:
    """The record's kind and length in characters; ValueError with what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    if record.keys() == _TEXT_KEYS:
        text = record["text"]
        if not isinstance(text, str) or not text or text.isspace():
            raise ValueError('"text" must be a non-empty string')
        return "text", len(text)
    if record.keys() != _CHAT_KEYS:
        raise ValueError(f'a record holds exactly "messages" or "text", not {sorted(record)}')
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    chars = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not m.keys() <= _MESSAGE_KEYS:
            raise ValueError(f"message {i} must be an object with role, content and optional weight")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in _ROLES:
            raise ValueError(f"message {i} has role {role!r}; use system, user or assistant")
        # isspace() is strip()'s emptiness test without copying a long turn.
        if not isinstance(content, str) or not content or content.isspace():
            raise ValueError(f"message {i} ({role}) has empty content")
        if "weight" in m and (
            role != "assistant" or m["weight"] not in (0, 1) or isinstance(m["weight"], bool)
        ):
            raise ValueError(f"message {i}: a weight (0 or 1) belongs on assistant turns only")
        chars += len(content)
    if not alternates(messages):
        raise ValueError("roles must alternate user/assistant after an optional system turn")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last turn must be the assistant's answer")
    return "chat", chars
