"""Turn a user's raw data file into training JSONL (train/val) plus the stats the planner needs.

Two row kinds come out: chat rows `{"messages": [{"role", "content", "weight"?}, ...]}` for fine-tuning and
document rows `{"text": "..."}` for continued pre-training. The runner (runner_image/data.py) reads both.

The user's file is first normalized (forged/brain/normalize.py): text in another encoding becomes UTF-8,
Parquet becomes JSONL, so every script reads UTF-8 records. The work itself is a processing script:
Forge's template for the mapping its rules detect (forged/brain/scripts/), a brain's script, or the user's
own. It runs in the sandbox (forged/brain/sandbox.py), its output is validated (forged/brain/validate.py)
and split so near-duplicates stay on one side (forged/brain/split.py). Token lengths and languages for the
stats come from study's measures (forged/brain/tokens.py, languages.py) over a bounded sample.
A brain's failing script goes back to it with the error, up to MAX_REPAIRS times.

Every problem with the user's file surfaces as a `DataError` whose text is one line saying what is wrong
and how to fix it; the gRPC layer maps it to INVALID_ARGUMENT and the CLI prints it as is.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forged.brain import planner, sandbox, tokens
from forged.brain.languages import language_mix
from forged.brain.mapping import ColumnMapping
from forged.brain.normalize import Loaded, Normalized, normalize, read_data
from forged.brain.sandbox import DEFAULT_LIMITS, Limits, SandboxResult
from forged.brain.scripting import MAX_REPAIRS, Brain, BrainSession, ScriptAnswer
from forged.brain.scripts import rows
from forged.brain.scripts.main import OUTPUT_NAME, REPORT_NAME
from forged.brain.scripts.records import MIN_EXAMPLES_FOR_VAL, cut_off, peek_records
from forged.brain.scripts.render import SCRIPT_NAME, render
from forged.brain.scripts.rows import (
    TEXT_LAYOUT,
    Conversation,
    DataError,
    Document,
    Dropped,
    Example,
    Message,
    convert,
    detect,
    example_text,
    is_placeholder,
    layout_label,
    tool_call_use,
)
from forged.brain.split import choose_val, read_lines, write_split
from forged.brain.validate import OutputInvalid, Validator, ValidOutput

__all__ = [
    "MIN_EXAMPLES_FOR_VAL",
    "TEXT_LAYOUT",
    "Conversation",
    "DataError",
    "DatasetStats",
    "Document",
    "Dropped",
    "Example",
    "Loaded",
    "Message",
    "PreparedData",
    "is_placeholder",
    "load_records",
    "prepare",
    "read_data",
    "row_results",
    "to_examples",
    "tool_call_use",
]

# Languages below this share of the examples are noise (a quoted phrase, a name), not a language of the data.
_LANGUAGE_MIN_SHARE = 0.02
_NOT_LANGUAGES = frozenset({"latin", "other"})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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
    # Counted with the planned model's tokenizer over a sample of the examples; 0 when it is not here.
    tokens_p50: int = Field(0, ge=0)
    tokens_p95: int = Field(0, ge=0)
    tokens_p99: int = Field(0, ge=0)
    languages: list[str] = Field(default_factory=list)  # most common first, e.g. "en", "de"
    kind: str = ""  # chat or text


class PreparedData(BaseModel):
    """Mirrors forge.v1.PrepareResponse; train_data/val_data are local paths the gRPC layer stores as
    artifacts and replaces with their digests."""

    model_config = ConfigDict(frozen=True)

    train_data: Path
    val_data: Path
    stats: DatasetStats
    brain: str = "offline"
    script: str = ""  # the processing script that produced the data, also saved beside it
    mapping_json: str = ""  # the validated mapping it implements; empty for a user's own script
    notes: list[str] = Field(default_factory=list)
    sent: list[str] = Field(default_factory=list)  # exactly what left the machine for the brain
    repairs: int = 0


def load_records(path: Path, name: str) -> tuple[list[dict[str, Any]], str]:
    """Read `path` (uploaded as `name`, any common encoding, Parquet too) into records and report the
    format it really is. A JSONL file cut off in its last record is refused, naming the line; `read_data`
    reports it instead, for callers that drop and count it."""
    loaded = read_data(path, name)
    if loaded.truncated_line:
        raise cut_off(name, loaded.truncated_line)
    return loaded.records, loaded.format


def to_examples(
    records: Sequence[Mapping[str, Any]], name: str = "the data"
) -> tuple[list[Example], str, Counter[str]]:
    """Records in a layout Forge's rules recognise, as conversations (or documents) plus drop counts."""
    mapping = detect(records, name)
    examples, dropped = convert(records, mapping, name)
    return examples, layout_label(mapping), dropped


def row_results(
    records: Sequence[Mapping[str, Any]], name: str = "the data"
) -> tuple[list[Example | Dropped], str]:
    """Each record's example under the mapping Forge's rules detect, or why it cannot be one (a
    `Dropped`), in file order, and the layout's name: what prepare's offline script would do to each row."""
    mapping = detect(records, name)
    return rows.row_results(records, mapping, name), layout_label(mapping)


def prepare(
    path: Path,
    name: str,
    out_dir: Path,
    seed: int,
    val_fraction: float = 0.1,
    *,
    goal: str = "",
    brain: Brain | None = None,
    no_upload: bool = False,
    script: str = "",
    side_files: Mapping[str, Path] | None = None,
    max_seq_len: int = 0,
    chars_per_token: float | None = None,
    model: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> PreparedData:
    """Convert the user's file to out_dir/train.jsonl and val.jsonl, and save the script beside them.

    `brain` None is Forge's offline rules; `script` (a user's own) runs as is with no brain asked.
    `side_files` lie read-only beside the input (Spider's tables.json). `max_seq_len` drops chat examples
    too long for the plan and sizes text chunks, with `chars_per_token` (measured with `model`'s tokenizer
    when not given). Token lengths in the stats are counted with `model`'s tokenizer (default: the
    planner's default model).
    """
    if not 0.0 <= val_fraction <= 0.5:
        raise DataError(f"val_fraction {val_fraction} is out of range: use a value between 0 and 0.5")
    name = _safe_name(name)
    sides = {_safe_name(n): p for n, p in (side_files or {}).items()}
    if name in sides or "script.py" in (name, *sides):
        raise DataError(f"side file names must differ from the data file ({name}) and from script.py")
    model = model.strip() or planner.TINY_MODEL
    with tempfile.TemporaryDirectory(prefix="forge-normalize-") as work:
        # The script reads UTF-8 only; a cp1252 CSV or a Parquet file becomes a UTF-8 copy here.
        normalized = normalize(path, name, Path(work))
        # A sample decides the mapping; it also refuses an unreadable file before any sandbox starts.
        sample, _ = peek_records(normalized.path, name)
        cpt = chars_per_token or _measured_chars_per_token(sample, model, max_seq_len, seed)
        prepared = _run(
            normalized.path,
            name,
            sides,
            sample,
            cpt,
            goal,
            brain,
            no_upload,
            script,
            max_seq_len,
            limits,
            Path(work),
        )
        return _finish(prepared, out_dir, seed, val_fraction, _notes(prepared, normalized, name), model)


def _notes(prepared: _Ran, normalized: Normalized, name: str) -> list[str]:
    """What the user should know about how the script ran; _finish adds what the data showed."""
    conversation = prepared.conversation
    notes: list[str] = []
    if not prepared.sandboxed:
        notes.append(
            f"bubblewrap is not installed, so Forge's own template script ran with resource limits only; "
            f"{sandbox.INSTALL_HINT}"
        )
    if normalized.parquet:
        prepared.report["source_format"] = "parquet"
    elif not normalized.encoding.startswith("utf-8"):
        notes.append(
            f"{name} is {normalized.encoding} text: the script read a UTF-8 copy; re-save the file as UTF-8 "
            "to run the script on it yourself"
        )
    if conversation and conversation.repairs:
        notes.append(f"the {prepared.brain_name} brain's script was repaired {conversation.repairs} times")
    if prepared.answer is not None and prepared.answer.explanation:
        notes.insert(0, prepared.answer.explanation)
    return notes


@dataclass
class _Ran:
    """A script that ran and whose output validated, with who wrote it."""

    valid: ValidOutput
    report: dict[str, Any]  # the script's report.json
    script: str
    answer: ScriptAnswer | None  # None: the user's own script
    brain_name: str
    conversation: BrainSession | None
    sandboxed: bool


def _run(
    path: Path,
    name: str,
    sides: Mapping[str, Path],
    sample: Sequence[Mapping[str, Any]],
    cpt: float,
    goal: str,
    brain: Brain | None,
    no_upload: bool,
    script: str,
    max_seq_len: int,
    limits: Limits,
    keep: Path,
) -> _Ran:
    """Get a script (the user's, Forge's template or the brain's), run it in the sandbox and validate its
    output, sending a brain's failing script back for repair. The valid output is moved into `keep`, where
    the split reads it."""
    conversation: BrainSession | None = None
    if script:
        answer, brain_name = None, "user"
    elif brain is None:
        try:
            answer = ScriptAnswer(mapping=_offline_mapping(sample, name, sides, max_seq_len, cpt))
        except DataError as exc:
            answer = _goal_mapping(path, name, goal, exc)
        brain_name = "offline"
    else:
        conversation, brain_name = BrainSession(brain), brain.name
        answer = conversation.first(goal, name, sample, list(sides), no_upload)

    inputs = {name: path, **sides}
    args = ["--input", f"/in/{name}", "--name", name]
    while True:
        text = script if answer is None else (answer.script or render(answer.mapping, name))
        # Only Forge's own templates may run without bubblewrap; a brain's or a user's script may not.
        trusted = answer is not None and not answer.script
        # Validation follows the output while the script writes it; valid lines are copied to `keep`, where
        # the split reads them after the sandbox's directory is gone.
        validator = Validator(OUTPUT_NAME, keep / OUTPUT_NAME, max_seq_len=max_seq_len, chars_per_token=cpt)
        try:
            with sandbox.run_script(
                text, inputs, args, limits, trusted=trusted, while_running=validator.poll
            ) as result:
                outcome = _check(result, validator)
        except sandbox.SandboxUnavailable as exc:
            raise DataError(str(exc)) from None
        if isinstance(outcome, tuple):
            valid, report = outcome
            return _Ran(valid, report, text, answer, brain_name, conversation, result.sandboxed)
        refusal = result.returncode == 2 and not result.reason
        if conversation is None or refusal or conversation.repairs >= MAX_REPAIRS:
            raise DataError(_failure_line(outcome, brain_name, conversation, refusal))
        assert answer is not None
        try:
            answer = conversation.repair(answer, outcome)
        except ValidationError as exc:
            raise DataError(
                f"the {brain_name} brain answered with an invalid mapping: {_first_error(exc)}"
            ) from None


def _measured_chars_per_token(
    sample: Sequence[Mapping[str, Any]], model: str, max_seq_len: int, seed: int
) -> float:
    """Characters per token of the sample's text cells with the planned tokenizer; only a length limit
    (max_seq_len) needs it, so nothing is tokenized without one."""
    if not max_seq_len:
        return tokens.CHARS_PER_TOKEN
    cells = [v for rec in sample for v in rec.values() if isinstance(v, str)]
    ratio = tokens.chars_per_token(cells, model, seed)
    # Within ColumnMapping's bounds: a sample of whitespace or one emoji a token is no reason to fail.
    return min(max(ratio, 1.0), 16.0) if ratio else tokens.CHARS_PER_TOKEN


def _goal_mapping(path: Path, name: str, goal: str, no_layout: DataError) -> ScriptAnswer:
    """No known layout: `study`'s verdict on the goal decides. A column the goal can be learnt from becomes
    a justified prompt -> target mapping; otherwise the refusal says why no column can serve the goal,
    which tells the user more than "no known layout"."""
    if not goal.strip():
        raise no_layout
    from forged.brain import study  # study reads files through this module

    target = study.study(path, name, goal=goal).target
    if target is None or not target.found or not target.prompt or target.target in ("", "text", "messages"):
        why = target.reason if target is not None and not target.found else str(no_layout)
        raise DataError(f"{why}; {study.NO_TARGET_FIX}" if target is not None and not target.found else why)
    mapping = ColumnMapping(layout="flat", prompt=target.prompt[0], response=target.target)
    return ScriptAnswer(mapping=mapping, explanation=f"the goal decided the mapping: {target.reason}")


def _offline_mapping(
    sample: Sequence[Mapping[str, Any]], name: str, sides: Mapping[str, Path], max_seq_len: int, cpt: float
) -> ColumnMapping:
    found = detect(sample, name, list(sides))
    if found["layout"] == "text" and max_seq_len:
        found |= {"chunk_tokens": max_seq_len, "chars_per_token": cpt}
    return ColumnMapping.model_validate(found)


def _check(result: SandboxResult, validator: Validator) -> tuple[ValidOutput, dict[str, Any]] | str:
    """The validated output and the script's report, or one line saying what went wrong."""
    if not result.ok:
        validator.close()
        tail = result.stderr_tail.strip()
        if result.returncode == 2 and not result.reason:
            return (
                tail.splitlines()[-1].removeprefix("error: ") if tail else "the script exited with status 2"
            )
        return f"{result.failure()}\n{tail[-1500:]}" if tail else result.failure()
    try:
        valid = validator.finish(result.out_dir)
    except OutputInvalid as exc:
        return f"its output is invalid: {exc}"
    return valid, _read_report(result.out_dir / REPORT_NAME)


def _read_report(path: Path) -> dict[str, Any]:
    """The script's own account; optional, and from an LLM's script not to be trusted beyond its types."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _failure_line(error: str, brain: str, conversation: BrainSession | None, refusal: bool) -> str:
    first = error.splitlines()[0] if error else "it failed"
    if refusal:
        return first
    whose = {"offline": "Forge's processing script", "user": "your processing script"}.get(
        brain, f"the {brain} brain's processing script"
    )
    tried = f" after {conversation.repairs} repairs" if conversation and conversation.repairs else ""
    hint = "fix the script and pass it again" if brain == "user" else "try --brain offline or fix the data"
    return f"{whose} failed{tried}: {first}; {hint}"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def _finish(
    ran: _Ran, out_dir: Path, seed: int, val_fraction: float, notes: list[str], model: str
) -> PreparedData:
    valid, report, script = ran.valid, ran.report, ran.script
    answer, conversation = ran.answer, ran.conversation
    n = len(valid)
    is_val = choose_val(valid.keys, _val_count(n, val_fraction), seed, valid.groups)
    valid.groups.clear()  # a million keys' counts: free them before the tokenizer loads
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.jsonl", out_dir / "val.jsonl"
    # The token and language measures read a bounded sample, picked straight out of the validated copy,
    # and run beside the split: it waits on the disk and the tokenizer's Rust code releases the GIL.
    sampled = read_lines(valid.path, valid.ends, tokens.sample_indices(valid.chars, seed))
    with ThreadPoolExecutor(max_workers=1) as pool:
        measured = pool.submit(_measure, [_text_of(orjson.loads(line)) for line in sampled], model, seed)
        write_split(valid.path, valid.ends, is_val, train_path, val_path)
        token_lengths, languages = measured.result()
    (out_dir / SCRIPT_NAME).write_text(script, encoding="utf-8")

    dropped = Counter(_counts(report.get("dropped_reasons")))
    dropped.update(valid.dropped)
    rows_in = report.get("rows_in")
    if not isinstance(rows_in, int) or rows_in < n:
        rows_in = n + sum(dropped.values())
    lengths = sorted(valid.chars)
    n_val = sum(is_val)
    stats = DatasetStats(
        rows_in=rows_in,
        train_examples=n - n_val,
        val_examples=n_val,
        dropped=sum(dropped.values()),
        dropped_reasons=dict(dropped.most_common()),
        layout=str(
            report.get("layout") or (layout_label(answer.mapping.model_dump()) if answer else "script")
        ),
        source_format=str(report.get("source_format") or ""),
        chars_p50=tokens.percentile(lengths, 0.50),
        chars_p95=tokens.percentile(lengths, 0.95),
        chars_max=lengths[-1],
        tokens_p50=token_lengths.p50 if not token_lengths.estimate else 0,
        tokens_p95=token_lengths.p95 if not token_lengths.estimate else 0,
        tokens_p99=token_lengths.p99 if not token_lengths.estimate else 0,
        languages=languages,
        kind=valid.kinds.most_common(1)[0][0],
    )
    if dropped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.most_common())
        notes.insert(0, f"dropped {stats.dropped} of {rows_in} rows: {reasons}")
    notes[1:1] = [str(x) for x in report.get("notes") or [] if isinstance(x, str)][:10]
    if n_val < _val_count(n, val_fraction):
        notes.append(f"validation holds {n_val} examples: groups of near-duplicates were kept in training")
    return PreparedData(
        train_data=train_path,
        val_data=val_path,
        stats=stats,
        brain=ran.brain_name,
        script=script,
        mapping_json=answer.mapping.as_json() if answer else "",
        notes=notes,
        sent=conversation.sent if conversation else [],
        repairs=conversation.repairs if conversation else 0,
    )


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k)[:80]: v for k, v in value.items() if isinstance(v, int) and v > 0}


def _safe_name(name: str) -> str:
    """The name the script sees under /in: the upload's base name, with nothing a path could abuse."""
    base = _SAFE_NAME.sub("_", Path(name).name).lstrip(".")
    return base or "data"


def _val_count(n: int, val_fraction: float) -> int:
    if n < MIN_EXAMPLES_FOR_VAL or val_fraction <= 0:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def _measure(texts: list[str], model: str, seed: int) -> tuple[tokens.Lengths, list[str]]:
    """Token lengths (study's measure) and the languages of the sampled examples' texts."""
    lengths = tokens.measure(texts, model, seed)
    mix = language_mix(texts)  # each text is judged on its first kilobyte, so a few thousand are cheap
    # Languages only: "latin" (Latin script, no language told) and "other" (no script) are no answer.
    return lengths, [
        code for code, share in mix if code not in _NOT_LANGUAGES and share >= _LANGUAGE_MIN_SHARE
    ]


def _text_of(record: Mapping[str, Any]) -> str:
    """A validated output record ({"text"} or {"messages"}) as the text it trains on."""
    return example_text(record["text"] if "text" in record else record["messages"])
