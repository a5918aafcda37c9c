"""Can this file serve the goal? The column the model would learn to write, or why there is none.

A goal is sorted into an intent (text-to-SQL, summarize, classify, continued pre-training, or answering),
and each intent looks for the column that holds what the model should produce. "No natural target" comes with
the evidence (empty rows, what a candidate column really holds), because training on the wrong column gives
a model that confidently writes noise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from forge.study_report import Target

from forged.brain.study_columns import (
    RESPONSE_NAMES,
    ColumnFacts,
    cell_text,
    overlap,
    sql_share,
    top_values,
)

Intent = Literal["sql", "summarize", "classify", "pretrain", "answer"]

_INTENTS: tuple[tuple[Intent, re.Pattern[str]], ...] = (
    ("sql", re.compile(r"\bsql\b|text.to.sql|\bquer(y|ies)\b|\bdatabases?\b", re.I)),
    ("summarize", re.compile(r"summar|\btl;?dr\b|condens|\brecap|\babstracts?\b|\bdigest\b", re.I)),
    (
        "classify",
        re.compile(r"classif|categori|\blabel|\broute\b|\btriage|priorit|sentiment|\btag\b|\bpredict", re.I),
    ),
    (
        "pretrain",
        re.compile(r"pre-?train|continu\w* train|\bstyle\b|write like|in the voice|language model", re.I),
    ),
)
SUMMARY_NAMES = re.compile(r"summar|abstract|tl;?dr|headline|synopsis|highlights|digest", re.I)
_ANSWERISH = RESPONSE_NAMES | {"resolution", "response_text", "agent_response", "resolution_notes"}
# A shorter text column that restates a longer one (a summary) shares most of its content words with it.
RESTATES = 0.5
SHORTER = 0.6
MIN_FILLED = 0.5
_SAMPLE = 500


def intent_of(goal: str) -> Intent:
    return next((intent for intent, pattern in _INTENTS if pattern.search(goal)), "answer")


def assess(
    goal: str,
    kind: str,
    layout: str,
    columns: Sequence[tuple[ColumnFacts, str]],
    rows: int,
    records: Sequence[Mapping[str, Any]],
) -> Target:
    """`columns` are (facts, role) pairs; `records` the sampled rows the facts came from."""
    intent = intent_of(goal)
    roles = {c.name: role for c, role in columns}
    by_name = {c.name: c for c, _ in columns}
    prompts = [n for n, r in roles.items() if r == "prompt"]
    free = sorted((c for c, r in columns if r == "free text"), key=lambda c: -c.chars_p50)

    if kind == "text":
        return Target(
            goal=goal,
            found=True,
            target="text",
            reason="plain text: continued pre-training on the text itself, every token trained; there is no "
            "prompt or answer to map",
        )
    if intent == "sql":
        sql_cols = [(c, sql_share(c.values)) for c, _ in columns]
        best = max(sql_cols, key=lambda p: p[1], default=None)
        if best is not None and best[1] >= 0.8:
            col, share = best
            asks = prompts or [c.name for c in free[:1]]
            reason = (
                f"'{col.name}' holds SQL in {share:.0%} of its {col.filled:,} rows"
                + (f" and '{asks[0]}' the questions" if asks else "")
                + "; prepare maps question → SQL"
            )
            return Target(goal=goal, found=True, target=col.name, prompt=asks, reason=reason)
        return _none(goal, "no column holds SQL statements", columns, rows, records, free)
    if intent == "summarize":
        return _summary_target(goal, columns, rows, records, free)
    if intent == "classify":
        labels = [c for c, r in columns if r == "label"]
        if labels and (free or prompts):
            # Words every label column shares ("ticket" in Ticket Type, Ticket Priority) name none of them.
            common = set.intersection(*(_name_words(c.name) for c in labels))
            named = [c for c in labels if any(w in goal.lower() for w in _name_words(c.name) - common)]
            col = (named or labels)[0]
            source = prompts or [free[0].name]
            return Target(
                goal=goal,
                found=True,
                target=col.name,
                prompt=source,
                reason=f"'{col.name}' has {col.distinct} distinct values ({', '.join(_top(col))}), a "
                f"category to predict from '{source[0]}'"
                + (
                    ""
                    if named
                    else f"; other label columns: {', '.join(c.name for c in labels[1:4]) or 'none'}"
                ),
            )
        return _none(goal, "no column holds a category to predict", columns, rows, records, free)

    # Answering (and anything else) needs a column of answers.
    answers = [n for n, r in roles.items() if r in ("response", "conversation")]
    if layout and answers:
        target = answers[0]
        if roles[target] == "conversation":
            learns = f"the assistant turns of '{target}' from the turns before them"
        else:
            learns = f"'{target}' from {', '.join(repr(p) for p in prompts)}"
        return Target(
            goal=goal,
            found=True,
            target=target,
            prompt=prompts,
            reason=f"prepare's offline layout {layout}: the model learns to write {learns}",
        )
    candidates = [by_name[n] for n in roles if n.strip().lower() in _ANSWERISH or roles[n] == "response"]
    good = [c for c in candidates if c.filled >= MIN_FILLED * rows]
    if good:
        col = good[0]
        source = prompts or [c.name for c in free if c.name != col.name][:1]
        return Target(
            goal=goal,
            found=True,
            target=col.name,
            prompt=source,
            reason=f"'{col.name}' is named like an answer and filled in {col.filled:,} of {rows:,} rows"
            + (f"; the prompt comes from '{source[0]}'" if source else ""),
        )
    return _none(goal, "no column holds answers the model could learn", columns, rows, records, free)


def _summary_target(
    goal: str,
    columns: Sequence[tuple[ColumnFacts, str]],
    rows: int,
    records: Sequence[Mapping[str, Any]],
    free: Sequence[ColumnFacts],
) -> Target:
    named = [c for c, _ in columns if SUMMARY_NAMES.search(c.name) and c.filled >= MIN_FILLED * rows]
    if named and free:
        source = next((c for c in free if c.name != named[0].name), None)
        if source is not None:
            return Target(
                goal=goal,
                found=True,
                target=named[0].name,
                prompt=[source.name],
                reason=f"'{named[0].name}' is named like a summary of '{source.name}'",
            )
    for long in free:
        for short in (c for c, r in columns if r in ("free text", "response") and c.name != long.name):
            if short.filled < MIN_FILLED * rows or short.chars_p50 >= SHORTER * long.chars_p50:
                continue
            share = _pair_overlap(short.name, long.name, records)
            if share >= RESTATES:
                return Target(
                    goal=goal,
                    found=True,
                    target=short.name,
                    prompt=[long.name],
                    reason=f"'{short.name}' is shorter than '{long.name}' and {share:.0%} of its words come "
                    "from it: it restates it",
                )
    return _none(
        goal,
        "no column holds summaries (none is named like one, and no text column restates a longer one)",
        columns,
        rows,
        records,
        free,
    )


def _none(
    goal: str,
    why: str,
    columns: Sequence[tuple[ColumnFacts, str]],
    rows: int,
    records: Sequence[Mapping[str, Any]],
    free: Sequence[ColumnFacts],
) -> Target:
    """No target: say why, with what the likeliest candidates really hold."""
    evidence: list[str] = []
    source = free[0] if free else None
    for col, role in columns:
        key = col.name.strip().lower()
        if not (role in ("response", "free text") or key in _ANSWERISH) or col is source:
            continue
        parts = []
        if col.empty:
            parts.append(f"is empty in {col.empty:,} of {rows:,} rows")
        if source is not None:
            share = _pair_overlap(col.name, source.name, records)
            parts.append(f"shares only {share:.0%} of its words with '{source.name}'")
        if parts:
            evidence.append(f"'{col.name}' " + " and ".join(parts))
    labels = [c for c, r in columns if r == "label"]
    if labels:
        evidence.append(
            "the short columns are categories (" + ", ".join(f"'{c.name}'" for c in labels[:4]) + ")"
        )
    reason = f"no natural target for '{goal}': {why}"
    if evidence:
        reason += "; " + "; ".join(evidence)
    return Target(goal=goal, found=False, reason=reason)


def _pair_overlap(short: str, long: str, records: Sequence[Mapping[str, Any]]) -> float:
    pairs = [(cell_text(r.get(short)), cell_text(r.get(long))) for r in records[:_SAMPLE]]
    pairs = [(s, lg) for s, lg in pairs if s.strip() and lg.strip()]
    return overlap([s for s, _ in pairs], [lg for _, lg in pairs])


def _name_words(name: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", name.lower()))


def _top(col: ColumnFacts) -> list[str]:
    return [v[:30] for v in top_values(col)]
