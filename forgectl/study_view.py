"""`forgectl study`: where the histogram goes, and the report as rich tables and coloured findings."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from forge.study_report import Finding, StudyReport
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from forgectl.output import fmt_bytes

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SEVERITY_MARK = {"error": "✗", "warning": "!", "info": "i"}
PROJECT_DIR = ".forge"


def project_dir(start: Path) -> Path | None:
    """The nearest `.forge/` folder at or above `start`: the project `forgectl init` made, if any."""
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_DIR
        if candidate.is_dir():
            return candidate
    return None


def default_png_path(data_file: Path, cwd: Path) -> Path:
    """In the project's .forge/ when there is a project, else next to the data file."""
    name = f"{data_file.name}.lengths.png"
    project = project_dir(cwd)
    return project / name if project is not None else data_file.with_name(name)


def write_png(data: bytes, wanted: Path, explicit: bool, cwd: Path) -> tuple[Path, str]:
    """Write the histogram; (where it went, a note). A default place that is read-only (a shared dataset
    folder) falls back to the current directory rather than failing the whole study."""
    # The mode bits, not os.access: root may write anywhere, but a folder marked read-only (a shared
    # dataset folder) is not one to litter.
    if explicit or _writable(wanted.parent):
        try:
            wanted.write_bytes(data)
            return wanted, ""
        except OSError:
            if explicit:
                raise
    fallback = cwd / wanted.name
    fallback.write_bytes(data)
    return fallback, f"{wanted.parent} is read-only, so the histogram went to the current directory"


def _writable(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)
    except OSError:
        return False


def render(report: StudyReport, png: Path | None, notes: Iterable[str] = ()) -> RenderableType:
    parts: list[RenderableType] = [_header(report), _columns(report), _numbers(report)]
    if report.findings:
        parts.append(Text("\nfindings", style="bold"))
        parts.extend(_finding(f) for f in report.findings)
    else:
        parts.append(Text("\nno problems found", style="green"))
    if report.target is not None:
        parts.append(_target(report))
    for note in notes:
        parts.append(Text(note, style="cyan"))
    if png is not None:
        parts.append(Text(f"token-length histogram: {png}", style="dim"))
    return Group(*parts)


def _header(report: StudyReport) -> Text:
    text = Text()
    text.append(report.file, style="bold")
    text.append(
        f"  {report.format}, {report.encoding}, {fmt_bytes(report.size_bytes)}, {report.rows:,} rows, "
        f"{report.kind} data"
    )
    if report.layout:
        text.append(
            f"\nprepare's offline layout: {report.layout}; {report.usable_rows:,} rows usable as they are"
        )
    else:
        text.append(
            "\nno layout prepare maps offline: it will ask the brain for a column mapping", style="dim"
        )
    return text


def _columns(report: StudyReport) -> Table:
    table = Table(title="columns", title_justify="left", show_edge=False, pad_edge=False)
    for head in ("column", "role", "filled", "empty", "distinct", "typical chars", "why"):
        table.add_column(
            head, justify="right" if head in ("filled", "empty", "distinct", "typical chars") else "left"
        )
    for col in report.columns:
        table.add_row(
            col.name,
            col.role,
            f"{col.filled:,}",
            f"{col.empty:,}" if col.empty else "",
            f"{col.distinct:,}",
            f"{col.chars_p50:,}",
            col.why,
            style="dim" if col.role in ("metadata", "id", "empty") else None,
        )
    return table


def _numbers(report: StudyReport) -> Table:
    table = Table(show_header=False, show_edge=False, pad_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    tok = report.tokens
    table.add_row(
        "token lengths",
        f"p50 {tok.p50:,} · p95 {tok.p95:,} · p99 {tok.p99:,} · max {tok.max:,}  ({tok.note})",
    )
    table.add_row(
        "rows",
        f"{report.empty_rows:,} empty · {report.duplicate_rows:,} exact duplicates · "
        f"{report.near_duplicate_rows:,} near-duplicates",
    )
    if report.languages:
        table.add_row(
            "languages", ", ".join(f"{lang.name} {lang.share:.0%}" for lang in report.languages[:5])
        )
    if report.pii:
        table.add_row("personal data", ", ".join(f"{p.kind} in {p.rows:,} rows" for p in report.pii))
    return table


def _finding(f: Finding) -> Text:
    style = SEVERITY_STYLE[f.severity]
    text = Text(f"{SEVERITY_MARK[f.severity]} {f.severity:<7} ", style=style)
    text.append(f.what, style=style if f.severity == "error" else None)
    if f.row_numbers:
        more = "…" if f.rows > len(f.row_numbers) else ""
        text.append(f"\n          rows {', '.join(map(str, f.row_numbers))}{more}", style="dim")
    for example in f.examples:
        text.append(f"\n          {example}", style="dim")
    if f.fix:
        text.append(f"\n          → {f.fix}", style="green")
    return text


def _target(report: StudyReport) -> Text:
    target = report.target
    assert target is not None
    text = Text("\ngoal: ", style="bold")
    text.append(target.goal)
    if target.found:
        text.append(f"\ntarget: {target.target}", style="bold green")
        if target.prompt:
            text.append(f"  from {', '.join(target.prompt)}", style="green")
        text.append(f"\n{target.reason}")
    else:
        text.append(f"\n{target.reason}", style="bold red")
    return text
