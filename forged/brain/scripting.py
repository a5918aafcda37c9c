"""Asking a brain for a column mapping and a processing script, and for repairs when one fails.

The brain is anything with a `name` and `ask(system, prompt, schema) -> schema instance` (forged/brain/llm/
builds the Gemini and OpenAI-compatible ones). Every sample row is PII-redacted before it is put in a
prompt; with `no_upload` no row is sent at all, only column names and counts. `BrainSession.sent` holds
exactly the text that left the machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from forged.brain import pii
from forged.brain.mapping import ColumnMapping

T = TypeVar("T", bound=BaseModel)

MAX_REPAIRS = 3
_SAMPLE_ROWS = 5
_SAMPLE_CELL_CHARS = 300

SYSTEM = """You prepare fine-tuning data. Given a data file's columns and sample rows and the user's goal,
answer with a column mapping and, only when no mapping layout fits, a Python script.
The script runs as `python script.py --input /in/FILE --output /out` with the standard library only, no
network, files beside the input under /in. It writes /out/prepared.jsonl: one JSON object a line, either
{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]} (optional system turn first, then
user and assistant by turns, ending with assistant) or {"text": "..."}. On data that cannot serve the goal it
prints one line to stderr saying why and exits 2. Leave `script` empty to use Forge's template for the
mapping, which is preferred."""


class Brain(Protocol):
    name: str

    def ask(self, system: str, prompt: str, schema: type[T]) -> T: ...


class ScriptAnswer(BaseModel):
    mapping: ColumnMapping
    script: str = Field("", description="stdlib-only Python; empty: Forge's template for the mapping")
    explanation: str = Field("", description="one or two sentences for the user")


@dataclass
class BrainSession:
    """One prepare's exchange with a brain: what was sent, and how many repairs were asked for."""

    brain: Brain
    sent: list[str] = field(default_factory=list)
    repairs: int = 0

    def first(
        self,
        goal: str,
        name: str,
        records: Sequence[Mapping[str, Any]],
        side_files: Sequence[str],
        no_upload: bool,
    ) -> ScriptAnswer:
        return self._ask(describe(goal, name, records, side_files, no_upload))

    def repair(self, previous: ScriptAnswer, error: str) -> ScriptAnswer:
        self.repairs += 1
        prompt = (
            f"Your previous answer failed.\nMapping: {previous.mapping.model_dump_json()}\n"
            f"Script:\n{previous.script or '(Forge template)'}\nError:\n{pii.redact(error)}\n"
            "Answer again with a corrected mapping and script."
        )
        return self._ask(prompt)

    def _ask(self, prompt: str) -> ScriptAnswer:
        self.sent += [SYSTEM, prompt]
        return self.brain.ask(SYSTEM, prompt, ScriptAnswer)


def describe(
    goal: str,
    name: str,
    records: Sequence[Mapping[str, Any]],
    side_files: Sequence[str],
    no_upload: bool,
) -> str:
    """The first prompt: goal, file, columns and (unless no_upload) a few redacted sample rows."""
    columns: dict[str, int] = {}
    for rec in records:
        for key, value in rec.items():
            columns[str(key)] = columns.get(str(key), 0) + (value not in (None, "", [], {}))
    lines = [
        f"Goal: {goal or '(none given)'}",
        f"File: {name}" + (f"; beside it: {', '.join(side_files)}" if side_files else ""),
        "Columns (non-empty in the sample of "
        + f"{len(records)}): "
        + ", ".join(f"{c} ({n})" for c, n in columns.items()),
    ]
    if no_upload:
        lines.append("No sample rows: the user does not allow sending data.")
    else:
        lines.append("Sample rows (personal data redacted):")
        lines += [json.dumps(_redacted(rec), ensure_ascii=False) for rec in records[:_SAMPLE_ROWS]]
    return "\n".join(lines)


def _redacted(record: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in record.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        # Redact before cutting: a cut through an e-mail address would hide it from the patterns.
        out[str(key)] = pii.redact(text)[:_SAMPLE_CELL_CHARS]
    return out
