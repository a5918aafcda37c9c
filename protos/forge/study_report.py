"""What `forgectl study` shows about a data file: forged builds it (forged/brain/study.py), the CLI shows it.

It travels as JSON in `forge.v1.StudyResponse.report_json`; both sides validate it with these models, so a
daemon and a CLI of different versions fail loudly rather than show half a report. `prepare` reuses the
findings: each says what is wrong, in how many rows, and what to do about it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["error", "warning", "info"]
# error: prepare cannot produce useful data as the file stands; warning: rows will be dropped or the model
# will learn something unwanted; info: worth knowing, nothing to fix.
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

Role = Literal[
    "prompt",
    "response",
    "context",
    "system",
    "conversation",
    "id",
    "metadata",
    "label",
    "free text",
    "nested",
    "empty",
]

DataKind = Literal["chat", "text", "table"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(_Model):
    severity: Severity
    code: str  # stable identifier (placeholders, pii, no_user_turn, ...), for prepare and for tests
    what: str  # one line: what is wrong, with counts
    rows: int = Field(default=0, ge=0)  # how many rows have it (0: a file-level finding)
    row_numbers: list[int] = Field(default_factory=list)  # the first few, 1-based record numbers
    examples: list[str] = Field(default_factory=list)  # short excerpts that show it
    fix: str = ""  # what to do about it


class Column(_Model):
    name: str
    role: Role
    why: str  # the evidence for the role, in words
    filled: int = Field(ge=0)  # rows with a non-empty value
    empty: int = Field(ge=0)
    distinct: int = Field(ge=0)  # distinct non-empty values (of the sampled rows when the file is large)
    chars_p50: int = Field(default=0, ge=0)
    chars_max: int = Field(default=0, ge=0)
    example: str = ""  # one short value


class TokenLengths(_Model):
    p50: int = Field(ge=0)
    p95: int = Field(ge=0)
    p99: int = Field(ge=0)
    max: int = Field(ge=0)
    measured: int = Field(ge=0)  # examples measured (a sample of a large file, plus its longest ones)
    tokenizer: str  # whose tokenizer counted, or "estimate" when none was available
    estimate: bool  # true: characters / 4, not a tokenizer's count
    note: str = ""  # what was counted and how; says "estimate" when it is one
    histogram: list[int] = Field(default_factory=list)  # counts per bin of width `bin_width`, from 0
    bin_width: int = Field(default=1, ge=1)


class LanguageShare(_Model):
    code: str  # ISO 639-1 (en, de) or a script name for undetermined text (latin, cjk)
    name: str
    share: float = Field(ge=0.0, le=1.0)


class PiiCount(_Model):
    kind: str  # email, phone, secret, card, ip
    rows: int = Field(ge=0)


class Target(_Model):
    """Whether the file can serve the goal: the column the model would learn to write, and why."""

    goal: str
    found: bool
    target: str = ""  # the column (or "text" for continued pre-training, "messages" for chats)
    prompt: list[str] = Field(default_factory=list)  # columns that would make up the prompt
    reason: str  # the justified mapping, or why there is no natural target


class StudyReport(_Model):
    file: str
    format: str  # csv, tsv, json, jsonl, parquet, text
    encoding: str
    size_bytes: int = Field(ge=0)
    rows: int = Field(ge=0)
    kind: DataKind  # chat: prompt/answer rows or conversations; text: documents; table: neither yet
    layout: str = ""  # prepare's name for a layout it maps offline (instruction/input/output); "" if none
    usable_rows: int = Field(default=0, ge=0)  # rows prepare would keep as they are
    columns: list[Column] = Field(default_factory=list)
    empty_rows: int = Field(default=0, ge=0)
    duplicate_rows: int = Field(default=0, ge=0)  # rows identical to an earlier one
    near_duplicate_rows: int = Field(default=0, ge=0)  # same text up to case, spacing, punctuation, digits
    tokens: TokenLengths
    languages: list[LanguageShare] = Field(default_factory=list)  # most common first
    pii: list[PiiCount] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)  # errors first, then warnings, then info
    target: Target | None = None  # only when a goal was given
    scanned_rows: int = Field(default=0, ge=0)  # rows the text checks read (all, or a bounded sample)

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)
