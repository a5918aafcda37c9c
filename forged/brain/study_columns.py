"""What each column of a data file is for: the role study infers, with the evidence for it.

Names decide first (prepare's own layouts, then common spellings), because that is what a person meant;
content decides the rest (nested values, SQL, numbers, dates, e-mail addresses, few distinct values,
long prose). Everything here reads a bounded sample of rows, so a million-row file costs the same as a small
one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forge.study_report import Role

from forged.brain.tokens import percentile

PROMPT_NAMES = frozenset(
    {"prompt", "instruction", "question", "query_text", "input", "user", "human", "request", "problem", "ask"}
)
RESPONSE_NAMES = frozenset(
    {
        "response",
        "output",
        "answer",
        "completion",
        "assistant",
        "gpt",
        "reply",
        "solution",
        "target",
        "chosen",
    }
)
CONTEXT_NAMES = frozenset({"context", "passage", "document", "background", "schema", "knowledge", "article"})
SYSTEM_NAMES = frozenset({"system", "system_prompt", "instructions_system", "persona"})
CONVERSATION_NAMES = frozenset({"messages", "conversations", "conversation", "dialog", "dialogue", "turns"})
_ID_NAME = re.compile(r"(^|[\s_\-])(id|uuid|guid|key|idx)$|^(id|uuid|guid|index)$|[a-z]Id$", re.IGNORECASE)

SQL = re.compile(
    r"^\s*(select|with|insert|update|delete)\b.*\b(from|into|set|where)\b", re.IGNORECASE | re.DOTALL
)
_NUMBER = re.compile(r"^[+-]?(\d[\d,]*\.?\d*|\.\d+)([eE][+-]?\d+)?%?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?|^\d{1,2}/\d{1,2}/\d{2,4}")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")

# A text column with at most this many distinct values (or this share of its rows) is a category.
LABEL_MAX_DISTINCT = 50
LABEL_MAX_SHARE = 0.05
LABEL_MAX_CHARS = 40
FREE_TEXT_MIN_CHARS = 40
FREE_TEXT_MIN_WORDS = 5
MOSTLY = 0.8
# Values the content rules look at: shares settle long before a few thousand rows.
ROLE_SAMPLE = 2000


@dataclass(frozen=True)
class ColumnFacts:
    """Counts over the sampled rows that the role rules and the report both need."""

    name: str
    values: list[Any]  # non-empty values, in row order
    empty: int
    distinct: int
    chars_p50: int
    chars_max: int

    @property
    def filled(self) -> int:
        return len(self.values)


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def facts(name: str, column: Sequence[Any]) -> ColumnFacts:
    values = [v for v in column if not is_empty(v)]
    texts = [cell_text(v) for v in values]
    lengths = sorted(len(t) for t in texts)
    return ColumnFacts(
        name=name,
        values=values,
        empty=len(column) - len(values),
        distinct=len(set(texts)),
        chars_p50=percentile(lengths, 0.5) if lengths else 0,
        chars_max=lengths[-1] if lengths else 0,
    )


def _is_nested(value: Any) -> bool:
    if isinstance(value, (dict, list)):
        return True
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return isinstance(json.loads(value), (dict, list))
        except ValueError:
            return False
    return False


def _share(values: Sequence[Any], test: Any) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def sql_share(values: Sequence[Any]) -> float:
    return _share(values, lambda v: isinstance(v, str) and bool(SQL.match(v)))


def infer_role(col: ColumnFacts, layout_roles: Mapping[str, Role]) -> tuple[Role, str]:
    """The column's role and the evidence for it, in words."""
    key = col.name.strip().lower()
    if not col.values:
        return "empty", "no row has a value"
    values = col.values[:ROLE_SAMPLE]
    if col.name in layout_roles:
        return layout_roles[col.name], "prepare's offline layout maps it by name"
    if key in CONVERSATION_NAMES and _share(values, _is_nested) >= MOSTLY:
        return "conversation", "a list of turns in each row"
    if _share(values, _is_nested) >= MOSTLY:
        return "nested", "objects or lists in each row, not text"
    if key in SYSTEM_NAMES:
        return "system", "named like a system prompt"
    if _ID_NAME.search(col.name.strip()):
        return "id", "named like an identifier"
    sql = sql_share(values)
    if sql >= MOSTLY:
        return "response", f"SQL statements in {sql:.0%} of rows"
    if key in PROMPT_NAMES:
        return "prompt", "named like a prompt"
    if key in RESPONSE_NAMES:
        return "response", "named like an answer"
    if key in CONTEXT_NAMES:
        return "context", "named like supporting context"
    texts = [cell_text(v) for v in values]
    if _share(texts, lambda t: bool(_NUMBER.match(t.strip()))) >= MOSTLY:
        if col.distinct <= 10:
            return "label", f"{col.distinct} distinct numbers: a rating or category"
        return "metadata", "numbers"
    if _share(texts, lambda t: bool(_DATE.match(t.strip()))) >= MOSTLY:
        return "metadata", "dates or times"
    if _share(texts, lambda t: bool(_EMAIL.match(t.strip()))) >= MOSTLY:
        return "metadata", "e-mail addresses"
    if col.distinct == col.filled and col.filled > 1 and col.chars_p50 <= 12 and " " not in texts[0].strip():
        return "id", "a distinct short value in every row"
    few = col.distinct <= LABEL_MAX_DISTINCT or col.distinct <= LABEL_MAX_SHARE * col.filled
    if few and col.chars_p50 <= LABEL_MAX_CHARS and col.filled > col.distinct:
        return "label", f"{col.distinct} distinct values: a category"
    typical_words = sorted(len(t.split()) for t in texts)[len(texts) // 2]
    if col.chars_p50 >= FREE_TEXT_MIN_CHARS or typical_words >= FREE_TEXT_MIN_WORDS:
        return "free text", f"prose, {typical_words} words in a typical row"
    return "metadata", "short values, mostly distinct"


def layout_roles(layout: str, spellings: Mapping[str, Sequence[str]]) -> dict[str, Role]:
    """The roles prepare's offline layout (instruction/input/output+system, messages, text) gives columns."""
    if not layout:
        return {}
    base, _, extra = layout.partition("+")
    parts = base.split("/")
    roles: dict[str, Role] = {}

    def put(key: str, role: Role) -> None:
        for spelled in spellings.get(key, ()):
            roles[spelled] = role

    if parts == ["text"]:
        put("text", "free text")
    elif len(parts) == 1:
        put(parts[0], "conversation")
    else:
        put(parts[0], "prompt")
        put(parts[-1], "response")
        if len(parts) == 3:
            put(parts[1], "context")
    if extra == "system":
        put("system", "system")
    return roles


def words(text: str) -> set[str]:
    """Content words: lower-cased, four letters or more, so 'the' and 'and' do not make texts look alike."""
    return {w for w in re.findall(r"[^\W\d_]{4,}", text.lower())}


def overlap(shorter: Sequence[str], longer: Sequence[str]) -> float:
    """Mean share of each short text's content words found in the long text of the same row."""
    shares = []
    for s, lg in zip(shorter, longer, strict=True):
        mine = words(s)
        if mine:
            shares.append(len(mine & words(lg)) / len(mine))
    return sum(shares) / len(shares) if shares else 0.0


def top_values(col: ColumnFacts, n: int = 3) -> list[str]:
    return [v for v, _ in Counter(cell_text(v) for v in col.values).most_common(n)]
