"""Check what a processing script wrote before anything trains on it.

A script may come from an LLM, so its output is checked record by record: the schema (chat
`{"messages": [...]}` or `{"text": ...}`), non-empty turns, roles that alternate after an optional system
turn, an assistant turn after every user turn, weights only on assistant turns. A structural fault fails the
whole output (it goes back to the brain for a repair); a chat example longer than the plan's max_seq_len is
dropped and counted instead, because a handful of long rows in good data is not the script's fault.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from forged.brain.scripts.rows import alternates
from forged.brain.split import text_key

_ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content", "weight"})
_TEXT_KEYS = frozenset({"text"})
_CHAT_KEYS = frozenset({"messages"})
_SHOWN_ERRORS = 3
TOO_LONG = "longer than max_seq_len"
# Bytes per read of the script's output.
_CHUNK = 1 << 20


class OutputInvalid(ValueError):
    """The script's output breaks the training-row contract. str() is one line."""


@dataclass
class ValidOutput:
    """What validation learnt about a script's output, without holding its records: a million rows cost a
    few bytes each here. The records themselves are in `path`, a copy of each valid line as it was checked,
    so what is split is exactly what was validated, whatever the script does to its own file."""

    path: Path
    keys: array[int] = field(default_factory=lambda: array("q"))  # near-duplicate keys for the split
    # How many records have each key, in the order keys first appear: counted batch by batch while the
    # script still runs, so choosing validation groups afterwards does not count a million keys again.
    groups: Counter[int] = field(default_factory=Counter)
    # Where each record's line ends in `path` (past its line break): the split copies runs of lines by
    # offset instead of reading the copy back line by line.
    ends: array[int] = field(default_factory=lambda: array("q"))
    chars: array[int] = field(default_factory=lambda: array("q"))
    kinds: Counter[str] = field(default_factory=Counter)  # chat / text
    dropped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.keys)


class Validator:
    """Validates the output file `name` in a script's output directory line by line, also while the script
    is still writing it.

    `poll` reads the complete lines written so far (call it while the script runs, so validation uses the
    second core instead of waiting), `finish` the rest once the script has exited. Valid lines are copied to
    `spool`. Should the script replace or shorten the file after lines were read, `finish` starts over from
    the file as it ended.
    """

    def __init__(self, name: str, spool: Path, *, max_seq_len: int = 0, chars_per_token: float = 4.0):
        self.name, self.spool = name, spool
        self._limit = int(max_seq_len * chars_per_token) if max_seq_len else 0
        self._reset()

    def _reset(self) -> None:
        self.out = ValidOutput(self.spool)
        self._errors: list[str] = []
        self._bad = 0
        self._lineno = 0
        self._offset = 0
        self._partial = b""
        self._ino = -1
        self._spool_f = self.spool.open("wb", buffering=_CHUNK)

    def poll(self, directory: Path, max_bytes: int = _CHUNK * 4) -> bool:
        """Validate the complete lines written to the file in `directory` since the last call, up to about
        `max_bytes`; whether any were read."""
        try:
            f = (directory / self.name).open("rb")
        except OSError:
            return False  # not written yet
        with f:
            ino = os.fstat(f.fileno()).st_ino
            if self._ino not in (-1, ino) or os.fstat(f.fileno()).st_size < self._offset:
                return False  # replaced or cut short: finish() starts over
            self._ino = ino
            f.seek(self._offset)
            data = f.read(max_bytes)
        if not data:
            return False
        self._offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        self._lines(data[:cut].split(b"\n")[:-1])
        return True

    def close(self) -> None:
        """Stop without a result (the script failed)."""
        self._spool_f.close()

    def finish(self, directory: Path, min_examples: int = 1) -> ValidOutput:
        """Validate the rest of the file: the output, or OutputInvalid naming the first bad lines."""
        path = directory / self.name
        try:
            if not path.is_file():
                raise OutputInvalid(
                    f"the script wrote no {self.name}: it must write one JSON record a line there"
                )
            st = path.stat()
            if self._ino not in (-1, st.st_ino) or st.st_size < self._offset:
                self._spool_f.close()
                self._reset()
            while self.poll(directory):
                pass
            if self._partial:  # a last line without a line break
                self._lines([self._partial])
        finally:
            self._spool_f.close()
        out = self.out
        if self._bad:
            more = f" (and {self._bad - len(self._errors)} more)" if self._bad > len(self._errors) else ""
            raise OutputInvalid(
                f"{self._bad} invalid records in {self.name}: " + "; ".join(self._errors) + more
            )
        if len(out) < min_examples:
            raise OutputInvalid(
                f"{self.name} holds {len(out)} usable examples; at least {min_examples} are needed"
            )
        return out

    def _lines(self, lines: list[bytes]) -> None:
        out, limit, write = self.out, self._limit, self._spool_f.write
        lengths, kinds, ends = out.chars, out.kinds, out.ends
        keys: list[int] = []
        end = ends[-1] if ends else 0
        for raw in lines:
            self._lineno += 1
            try:
                # orjson: several times faster than json here, and stricter (invalid UTF-8, lone surrogates).
                kind, chars, key = _check(orjson.loads(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                if raw.decode("utf-8", "replace").strip():  # blank lines are allowed
                    self._bad += 1
                    if len(self._errors) < _SHOWN_ERRORS:
                        self._errors.append(f"line {self._lineno}: {exc}")
                continue
            if limit and kind == "chat" and chars > limit:
                out.dropped[TOO_LONG] += 1
                continue
            raw = raw.rstrip(b"\r")
            write(raw)
            write(b"\n")
            end += len(raw) + 1
            ends.append(end)
            keys.append(key)
            lengths.append(chars)
            kinds[kind] += 1
        out.keys.extend(keys)
        out.groups.update(keys)


def _check(record: Any) -> tuple[str, int, int]:
    """The record's kind, length in characters and near-duplicate key; ValueError with what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    if record.keys() == _TEXT_KEYS:
        text = record["text"]
        if not isinstance(text, str) or not text or text.isspace():
            raise ValueError('"text" must be a non-empty string')
        return "text", len(text), text_key(text)
    if record.keys() != _CHAT_KEYS:
        raise ValueError(f'a record holds exactly "messages" or "text", not {sorted(record)}')
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    chars = 0
    users: list[str] = []
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
        if role == "user":
            users.append(content)
    if not alternates(messages):
        raise ValueError("roles must alternate user/assistant after an optional system turn")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last turn must be the assistant's answer")
    return "chat", chars, text_key("\n".join(users))
