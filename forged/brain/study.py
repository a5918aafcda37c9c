"""`forgectl study FILE`: what is in a data file, what is wrong with it, and whether it can serve the goal.

Reads only. Every check that looks at text runs over all rows up to SCAN_ROWS and over a seeded sample
beyond, and says so; the whole-row checks (duplicates, layout problems) run over every row. Findings carry
counts, the first row numbers, short excerpts and a fix, so the CLI can show them and `prepare` can reuse
them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.study_report import (
    SEVERITIES,
    Column,
    DataKind,
    Finding,
    LanguageShare,
    PiiCount,
    Severity,
    StudyReport,
    TokenLengths,
)

from forged.brain import ingest, pii, planner, tokens
from forged.brain.ingest import DataError, Dropped
from forged.brain.languages import NAMES, language_mix
from forged.brain.sampling import seeded_sample
from forged.brain.scripts.rows import example_text
from forged.brain.study_columns import (
    ColumnFacts,
    cell_text,
    facts,
    infer_role,
    is_empty,
    layout_roles,
)
from forged.brain.study_target import assess

SCAN_ROWS = 50_000  # rows the text checks (PII, placeholders, HTML, ...) read before sampling
COLUMN_SAMPLE = 20_000  # rows the column roles are inferred from
LANGUAGE_SAMPLE = 1_000
SHOW_ROWS = 10
SHOW_EXAMPLES = 3
EXCERPT = 70

PLACEHOLDER = re.compile(r"\{\{?\s*[A-Za-z_][A-Za-z0-9_]{1,40}\s*\}?\}")
HTML = re.compile(
    r"</?(?:p|br|div|span|a|b|i|u|ul|ol|li|table|tr|td|th|strong|em|h[1-6]|img|html|body|font)\b[^<>]{0,200}>"
    r"|&(?:nbsp|amp|lt|gt|quot|#\d{2,5});",
    re.IGNORECASE,
)
# UTF-8 read as cp1252/latin-1 and written back: é → Ã©, ’ → â€™.
MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€[\u0080-\u00bf™œ\u201c\u201d\u2018\u2019\u02dc]|Â[\u00a0-\u00bf]")
_NORMALIZE = re.compile(r"[\W\d_]+")
_SCHEMA_KEYS = frozenset({"db_id", "database", "db", "schema_id"})

_DROP_ADVICE: dict[str, tuple[Severity, str]] = {
    "empty response": ("warning", "fill in the answers, or leave these rows out; prepare drops them"),
    "empty prompt": ("warning", "fill in the prompts, or leave these rows out; prepare drops them"),
    "no user turn": (
        "warning",
        "add the user message each reply answers, or remove the record; prepare drops it",
    ),
    "no assistant turn": ("warning", "add the reply the model should learn, or remove the record"),
    "repetitive response": (
        "warning",
        "rewrite or remove it: a model trained on a looping answer learns to loop; prepare drops it",
    ),
    "repetitive text": ("warning", "remove it: repeated text teaches the model to loop; prepare drops it"),
    "non-alternating turns": (
        "warning",
        "merge consecutive turns of one speaker (chat templates expect user and assistant by turns); "
        "prepare drops these records",
    ),
}


@dataclass
class _Hits:
    """Rows (1-based) where a check fired, with excerpts."""

    rows: list[int] = field(default_factory=list)
    examples: Counter[str] = field(default_factory=Counter)

    def add(self, row: int, *examples: str) -> None:
        self.rows.append(row)
        self.examples.update(examples)


def study(path: Path, name: str, goal: str = "", model: str = "", seed: int = 0) -> StudyReport:
    """Study `path` (uploaded as `name`). Raises DataError (one line) only when the file cannot be read."""
    loaded = ingest.read_data(path, name)
    records = loaded.records
    n = len(records)
    findings: list[Finding] = []
    names = _column_names(records)
    spellings = {k: tuple(v) for k, v in _spellings(names).items()}

    results: list[Any] = []
    layout = ""
    turn_key = next((spellings[k][0] for k in ("messages", "conversations") if k in spellings), "")
    if turn_key:
        findings += _tool_findings(records, turn_key)
    try:
        results, layout = ingest.row_results(records, name)
    except DataError as exc:
        if not any(f.code == "tool_calls" for f in findings):
            unknown = str(exc).startswith("no known column layout")
            findings.append(
                Finding(
                    severity="info" if unknown else "error",
                    code="no_offline_layout" if unknown else "refused",
                    what=str(exc),
                    fix="prepare asks the brain for a column mapping; give it a goal"
                    if unknown
                    else "fix the file as the message says before prepare",
                )
            )
    kind: DataKind = "text" if layout == ingest.TEXT_LAYOUT else "chat" if layout or turn_key else "table"

    sample_idx = seeded_sample(n, COLUMN_SAMPLE, seed)
    sample = [records[i] for i in sample_idx]
    roles_by_layout = layout_roles(layout, spellings)
    column_facts: list[tuple[ColumnFacts, str, str]] = []
    for col in names:
        f = facts(col, [rec.get(col) for rec in sample])
        role, why = infer_role(f, roles_by_layout)
        column_facts.append((f, role, why))
    empty_counts = {col: sum(1 for rec in records if is_empty(rec.get(col))) for col in names}

    texts = _example_texts(records, results, column_facts)
    findings += _drop_findings(records, results)
    if turn_key:
        findings += _conversation_findings(records, turn_key)
    if loaded.format in ("csv", "tsv"):
        findings += _shape_findings(records, names, loaded.delimiter)
    if loaded.truncated_line:
        findings.append(
            Finding(
                severity="warning",
                code="truncated_last_record",
                what=f"the last record (line {loaded.truncated_line}) stops mid-way: the file was cut off",
                rows=1,
                row_numbers=[loaded.truncated_line],
                fix="export the file again; until then prepare leaves that record out",
            )
        )
    findings += _column_findings(records, column_facts, empty_counts, n)

    empty_rows = sum(1 for rec in records if all(is_empty(v) for v in rec.values()))
    duplicate_rows, near_rows = _duplicates(records, texts)
    if empty_rows:
        findings.append(
            Finding(
                severity="warning",
                code="empty_rows",
                what=f"{empty_rows:,} rows are empty",
                rows=empty_rows,
                fix="remove them",
            )
        )
    if duplicate_rows:
        findings.append(
            Finding(
                severity="warning",
                code="duplicate_rows",
                what=f"{duplicate_rows:,} rows repeat an earlier row exactly",
                rows=duplicate_rows,
                fix="remove the repeats: they weigh those examples more and leak into validation",
            )
        )
    if near_rows:
        findings.append(
            Finding(
                severity="info",
                code="near_duplicates",
                what=f"{near_rows:,} more rows repeat an earlier one up to case, spacing, punctuation and "
                "digits",
                rows=near_rows,
                fix="keep one of each; prepare keeps near-duplicates on one side of the train/val split",
            )
        )

    scan_idx = seeded_sample(n, SCAN_ROWS, seed)
    pii_rows, text_findings = _scan_text(records, scan_idx)
    findings += text_findings
    if pii_rows:
        listed = ", ".join(f"{_PII_NAMES[k]} in {v:,} rows" for k, v in pii_rows.most_common())
        findings.append(
            Finding(
                severity="warning",
                code="pii",
                what=f"personal data or secrets: {listed}",
                rows=max(pii_rows.values()),
                fix="drop or mask those columns if the model must not learn them; prepare redacts them from "
                "any sample it sends to a brain",
            )
        )

    lengths = tokens.measure(texts, _planned_model(goal, model, texts), seed)
    languages = language_mix(texts[i] for i in seeded_sample(len(texts), LANGUAGE_SAMPLE, seed))
    usable = sum(1 for r in results if not isinstance(r, Dropped))
    roles = [(f, role) for f, role, _ in column_facts]
    target = assess(goal, kind, layout, roles, n, sample) if goal.strip() else None
    if target is not None and not target.found:
        findings.append(Finding(severity="error", code="no_target", what=target.reason, fix=NO_TARGET_FIX))
    elif target is not None:
        # The target's mapping answers what "no offline layout" asked.
        findings = [f for f in findings if f.code != "no_offline_layout"]

    return StudyReport(
        file=name,
        format=loaded.format,
        encoding=loaded.encoding,
        size_bytes=path.stat().st_size,
        rows=n,
        kind=kind,
        layout=layout,
        usable_rows=usable,
        columns=[
            Column(
                name=f.name,
                role=role,  # type: ignore[arg-type]
                why=why,
                filled=n - empty_counts[f.name],
                empty=empty_counts[f.name],
                distinct=f.distinct,
                chars_p50=f.chars_p50,
                chars_max=f.chars_max,
                example=_excerpt(cell_text(f.values[0])) if f.values else "",
            )
            for f, role, why in column_facts
        ],
        empty_rows=empty_rows,
        duplicate_rows=duplicate_rows,
        near_duplicate_rows=near_rows,
        tokens=TokenLengths(**vars(lengths)),
        languages=[LanguageShare(code=c, name=NAMES.get(c, c), share=round(s, 4)) for c, s in languages],
        pii=[PiiCount(kind=k, rows=v) for k, v in pii_rows.most_common()],
        findings=sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.rows)),
        target=target,
        scanned_rows=len(scan_idx),
    )


NO_TARGET_FIX = (
    "add a column with what the model should write (a few hundred good examples are enough), or choose a "
    "goal this data supports"
)
_PII_NAMES = {
    "email": "e-mails",
    "phone": "phone numbers",
    "secret": "keys",
    "card": "card numbers",
    "ip": "IPs",
}


def _planned_model(goal: str, model: str, texts: Sequence[str]) -> str:
    """The user's model, else the planner's choice for the goal (its tokenizer is the one that counts)."""
    if model.strip():
        return model.strip()
    lengths = sorted(len(t) for t in texts) or [0]
    stats = {
        "train_examples": max(1, len(texts)),
        "chars_p95": tokens.percentile(lengths, 0.95),
        "chars_max": lengths[-1],
    }
    try:
        return str(planner.plan(goal or "study", stats).spec["model"])
    except DataError:
        return planner.TINY_MODEL


def _column_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for keys in dict.fromkeys(tuple(rec) for rec in records):
        for key in keys:
            if isinstance(key, str):  # csv.DictReader files extra fields under None
                seen.setdefault(key, None)
    return list(seen)


def _spellings(names: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for col in names:
        out[col.strip().lower()].append(col)
    return out


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif depth < 6 and isinstance(value, dict):
        for v in value.values():
            yield from _strings(v, depth + 1)
    elif depth < 6 and isinstance(value, list):
        for v in value:
            yield from _strings(v, depth + 1)


def _row_text(rec: Mapping[str, Any]) -> str:
    return "\n".join(s for k, v in rec.items() if k is not None for s in _strings(v))


def _example_texts(
    records: Sequence[Mapping[str, Any]],
    results: Sequence[Any],
    columns: Sequence[tuple[ColumnFacts, str, str]],
) -> list[str]:
    """The text of each example as prepare would train it, or of the text-bearing columns when no layout
    maps the file yet."""
    if results:
        return [example_text(r) for r in results if not isinstance(r, Dropped)]
    wordy = [
        f.name for f, role, _ in columns if role in ("prompt", "response", "context", "free text", "system")
    ]
    if not wordy:
        return [_row_text(rec) for rec in records]
    return ["\n".join(cell_text(rec.get(c)) for c in wordy if not is_empty(rec.get(c))) for rec in records]


def _excerpt(text: str, limit: int = EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _longest_string(rec: Mapping[str, Any]) -> str:
    return max(_strings(dict(rec)), key=len, default="")


def _drop_findings(records: Sequence[Mapping[str, Any]], results: Sequence[Any]) -> list[Finding]:
    rows: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(results, start=1):
        if isinstance(r, Dropped):
            rows[str(r)].append(i)
    out = []
    for reason, numbers in sorted(rows.items(), key=lambda p: -len(p[1])):
        severity, fix = _DROP_ADVICE.get(reason, ("warning", "fix these records; prepare drops them"))
        examples = []
        for i in numbers[:SHOW_EXAMPLES]:
            longest = _longest_string(records[i - 1])
            size = f" ({len(longest):,} characters)" if len(longest) > EXCERPT else ""
            examples.append(f"record {i}: {_excerpt(longest)}{size}")
        out.append(
            Finding(
                severity=severity,
                code=re.sub(r"\W+", "_", reason).strip("_"),
                what=f"{_plural(len(numbers), 'record')} with {reason} (prepare drops them)",
                rows=len(numbers),
                row_numbers=numbers[:SHOW_ROWS],
                examples=examples,
                fix=fix,
            )
        )
    return out


def _tool_findings(records: Sequence[Mapping[str, Any]], turn_key: str) -> list[Finding]:
    count, signs = ingest.tool_call_use(records, (turn_key,))
    if not count:
        return []
    what = ", ".join(s if s.startswith("a ") else f"'{s}'" for s, _ in signs.most_common(4))
    return [
        Finding(
            severity="error",
            code="tool_calls",
            what=f"{count:,} of {len(records):,} conversations use tool calling ({what})",
            rows=count,
            fix="Forge cannot train tool calls yet (every model family formats them differently): remove "
            "those conversations to train on the plain chats, or write each call out as ordinary text",
        )
    ]


def _turns(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _conversation_findings(records: Sequence[Mapping[str, Any]], turn_key: str) -> list[Finding]:
    with_system: list[int] = []
    without: list[int] = []
    for i, rec in enumerate(records, start=1):
        roles = [
            str(t.get("role", t.get("from", ""))).strip().lower()
            for t in _turns(rec.get(turn_key))
            if isinstance(t, dict)
        ]
        (with_system if "system" in roles else without).append(i)
    out = []
    if with_system and without:
        out.append(
            Finding(
                severity="warning",
                code="missing_system",
                what=f"{_plural(len(without), 'record')} without a system message, while "
                f"{len(with_system):,} of {len(records):,} have one",
                rows=len(without),
                row_numbers=without[:SHOW_ROWS],
                fix="give every record the same system message (or none), so the model does not learn two "
                "behaviours",
            )
        )
    return out


def _shape_findings(
    records: Sequence[Mapping[str, Any]], names: Sequence[str], delimiter: str
) -> list[Finding]:
    """A CSV whose quoting broke: rows with too many or too few fields, or one cell holding many rows."""
    longer = [i for i, rec in enumerate(records, start=1) if None in rec]
    shorter = [i for i, rec in enumerate(records, start=1) if None not in rec and None in rec.values()]
    swallowed: list[int] = []
    examples = []
    need = max(1, len(names) - 1)
    for i, rec in enumerate(records, start=1):
        for col, value in rec.items():
            if not isinstance(value, str) or "\n" not in value:
                continue
            lines = [line for line in value.split("\n")[1:] if line.count(delimiter) >= need]
            if len(lines) >= 2:
                swallowed.append(i)
                examples.append(
                    f"row {i}, '{col}': {len(lines)} lines that look like rows, e.g. {_excerpt(lines[0], 50)}"
                )
                break
    out = []
    if swallowed:
        out.append(
            Finding(
                severity="error",
                code="collapsed_rows",
                what=f"{_plural(len(swallowed), 'row')} swallow the rows after them into one field (a quote "
                "opened and never closed): the file is mangled",
                rows=len(swallowed),
                row_numbers=swallowed[:SHOW_ROWS],
                examples=examples[:SHOW_EXAMPLES],
                fix="close the quote in that row (a cell with commas or line breaks must be wrapped in "
                "double quotes on both sides) and export the file again",
            )
        )
    if longer or shorter:
        parts = []
        if longer:
            parts.append(f"{len(longer):,} have more fields than the header's {len(names)}")
        if shorter:
            parts.append(f"{len(shorter):,} have fewer")
        out.append(
            Finding(
                severity="warning",
                code="row_shape",
                what="rows do not match the header: " + ", ".join(parts),
                rows=len(longer) + len(shorter),
                row_numbers=sorted(longer + shorter)[:SHOW_ROWS],
                fix="check the delimiter and the quoting of those rows",
            )
        )
    return out


def _column_findings(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[ColumnFacts, str, str]],
    empty_counts: Mapping[str, int],
    n: int,
) -> list[Finding]:
    out = []
    nested = [f.name for f, role, _ in columns if role == "nested"]
    for f, role, _ in columns:
        if role == "context" and empty_counts[f.name]:
            out.append(
                Finding(
                    severity="info",
                    code="optional_empty",
                    what=f"'{f.name}' is empty in {empty_counts[f.name]:,} of {n:,} rows: those prompts are "
                    "the instruction alone",
                    rows=empty_counts[f.name],
                )
            )
        if role in ("context", "prompt", "system"):
            placeholders = Counter(
                v.strip()
                for rec in records
                if isinstance(v := rec.get(f.name), str) and v.strip() and ingest.is_placeholder(v)
            )
            if placeholders:
                total = sum(placeholders.values())
                out.append(
                    Finding(
                        severity="info",
                        code="placeholder_values",
                        what=f"'{f.name}' holds a placeholder instead of nothing in {total:,} rows",
                        rows=total,
                        examples=[repr(v) for v, _ in placeholders.most_common(SHOW_EXAMPLES)],
                        fix="leave those cells empty; prepare already leaves them out of the prompt",
                    )
                )
        if role in ("free text", "prompt", "response"):
            seen: set[str] = set()
            repeats = 0
            for rec in records:
                v = rec.get(f.name)
                if isinstance(v, str) and v.strip():
                    repeats += v in seen
                    seen.add(v)
            # A lone text column repeats exactly when whole rows do; duplicate_rows already says so.
            if repeats >= 0.01 * n and len(columns) > 1:
                out.append(
                    Finding(
                        severity="warning",
                        code="duplicate_values",
                        what=f"{repeats:,} rows repeat an earlier '{f.name}' exactly",
                        rows=repeats,
                        fix="check whether those rows are copies; identical inputs with different answers "
                        "teach the model to guess",
                    )
                )
    if nested:
        out.append(
            Finding(
                severity="info",
                code="nested",
                what="nested objects or lists in " + ", ".join(f"'{c}'" for c in nested) + ", not text",
                fix="prepare ignores them unless its mapping uses them; a flattened parse tree is not a "
                "useful prompt",
            )
        )
    keys = [f.name for f, _, _ in columns if f.name.strip().lower() in _SCHEMA_KEYS]
    if keys:
        out.append(
            Finding(
                severity="info",
                code="schema_elsewhere",
                what=f"'{keys[0]}' names a database whose schema is not in this file (Spider-style data "
                "keeps the schemas in tables.json)",
                fix="give tables.json to prepare as a side file, so each question is joined with its "
                "database's tables and columns by "
                f"'{keys[0]}'",
            )
        )
    return out


def _duplicates(records: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> tuple[int, int]:
    """Rows identical to an earlier row, and further rows whose text matches an earlier one once case,
    spacing, punctuation and digits are ignored. Hashes only, so a million rows stay cheap."""
    seen_rows: set[int] = set()
    exact = 0
    for rec in records:
        key = hash(json.dumps(rec, sort_keys=True, default=str, ensure_ascii=False))
        exact += key in seen_rows
        seen_rows.add(key)
    seen_texts: set[int] = set()
    repeats = 0
    for text in texts:
        norm = _NORMALIZE.sub(" ", text.lower()).strip()
        if not norm:
            continue
        key = hash(norm)
        repeats += key in seen_texts
        seen_texts.add(key)
    return exact, max(0, repeats - exact)


def _scan_text(
    records: Sequence[Mapping[str, Any]], indices: Sequence[int]
) -> tuple[Counter[str], list[Finding]]:
    pii_rows: Counter[str] = Counter()
    placeholders, html, fffd, mojibake = _Hits(), _Hits(), _Hits(), _Hits()
    for i in indices:
        text = _row_text(records[i])
        row = i + 1
        pii_rows.update(set(pii.find(text)))
        if found := PLACEHOLDER.findall(text):
            placeholders.add(row, *{f.replace(" ", "") for f in found})
        if found := HTML.findall(text):
            html.add(row, *found[:3])
        if "\ufffd" in text:
            at = text.index("\ufffd")
            fffd.add(row, _excerpt(text[max(0, at - 25) : at + 25], 60))
        if found := MOJIBAKE.findall(text):
            mojibake.add(row, *found[:3])
    scope = "" if len(indices) == len(records) else f" (of {len(indices):,} rows scanned)"
    out = []
    for hits, severity, code, what, fix in (
        (
            placeholders,
            "warning",
            "placeholders",
            "unfilled template placeholders",
            "fill them in (e.g. the product's name) or remove them: the model would learn to write them",
        ),
        (
            html,
            "warning",
            "html",
            "HTML fragments",
            "strip the markup, or keep it only if the model should write HTML",
        ),
        (
            fffd,
            "warning",
            "replacement_characters",
            "U+FFFD replacement characters (text lost in an earlier encoding conversion)",
            "re-export from the original source in UTF-8; the lost characters cannot be recovered from this "
            "file",
        ),
        (
            mojibake,
            "warning",
            "mojibake",
            "mojibake (UTF-8 read as Latin-1, like 'Ã©' for 'é')",
            "re-export the file in UTF-8 from the original source",
        ),
    ):
        if hits.rows:
            out.append(
                Finding(
                    severity=severity,  # type: ignore[arg-type]
                    code=code,
                    what=f"{what} in {len(hits.rows):,} rows{scope}",
                    rows=len(hits.rows),
                    row_numbers=hits.rows[:SHOW_ROWS],
                    examples=[e for e, _ in hits.examples.most_common(SHOW_EXAMPLES)],
                    fix=fix,
                )
            )
    return pii_rows, out


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
