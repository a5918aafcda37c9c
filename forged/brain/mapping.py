"""The column mapping a brain answers with: which columns become which turns, validated before any use.

A brain's answer is never trusted: an LLM's mapping goes through this model (unknown keys refused, each
layout's columns required) before a script is rendered from it or run with it.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Layout = Literal["flat", "messages", "sharegpt", "text", "sql"]

# The columns each layout cannot do without.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "flat": ("prompt", "response"),
    "messages": ("turns",),
    "sharegpt": ("turns",),
    "text": ("text",),
    "sql": ("prompt", "response"),
}


class ColumnMapping(BaseModel):
    """Column names match case-insensitively; the script looks each up in every record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Layout
    prompt: str | None = Field(None, description="flat/sql: the column holding the user's request")
    context: str | None = Field(None, description="flat: optional second half of the prompt (alpaca input)")
    response: str | None = Field(None, description="flat/sql: the column holding the answer to train")
    system: str | None = Field(None, description="optional column holding a system prompt")
    turns: str | None = Field(None, description="messages/sharegpt: the column holding the list of turns")
    text: str | None = Field(None, description="text: the column holding documents")
    schema_file: str | None = Field(None, description="sql: side file with the schemas, e.g. tables.json")
    chunk_tokens: int = Field(
        0, ge=0, le=1 << 20, description="text: cut documents to about this many tokens"
    )
    chars_per_token: float = Field(
        4.0, gt=0.5, le=32.0, description="text: measured for the planned tokenizer"
    )
    drop_repetitive: bool = True
    placeholders_as_empty: bool = Field(True, description='flat: "No input", "N/A" in context mean empty')

    @model_validator(mode="after")
    def _columns_for_layout(self) -> ColumnMapping:
        missing = [c for c in _REQUIRED[self.layout] if not getattr(self, c)]
        if missing:
            raise ValueError(f"layout {self.layout} needs the {' and '.join(missing)} column")
        return self

    def as_json(self) -> str:
        return json.dumps(self.model_dump(exclude_defaults=False), indent=1, sort_keys=True)
