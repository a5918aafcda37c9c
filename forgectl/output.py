"""Turning forge messages into what people read (rich) and what programs read (JSON)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

import click
from forge.v1 import brain_pb2, daemon_pb2, hardware_pb2, jobs_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

TERMINAL_STATES = frozenset(
    {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}
)
STATE_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def tiny_note(model: str) -> str:
    return (
        f"note: model '{model}' is a pipeline check with random weights: it learns your data but knows "
        "nothing else. Pass --model with a real model (a short name like qwen, an HF repo id or a local "
        "directory) for a useful fine-tune."
    )


def console(stderr: bool = False) -> Console:
    # No highlighting: numbers and paths in our own lines should not be recoloured by guesswork.
    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal:
        # Pipes and CI logs: a line per line (no wrapping at a made-up 80 columns), tables as wide as needed.
        width = None if os.environ.get("COLUMNS") else 200
        con = Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)
    return con


def emit_json(obj: Any) -> None:
    """One JSON document per line, so `jq` and line-oriented tools both work."""
    click.echo(json.dumps(obj, ensure_ascii=False))


def error_line(message: str, code: str, as_json: bool) -> None:
    if as_json:
        emit_json({"error": message, "code": code})
    click.echo(f"error: {message}", err=True)


# ---------------------------------------------------------------- values


def state_name(state: int) -> str:
    name = jobs_pb2.JobState.Name(state) if state in jobs_pb2.JobState.values() else "JOB_STATE_UNSPECIFIED"
    return name.removeprefix("JOB_STATE_").lower()


def ts_to_iso(ts: timestamp_pb2.Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def ts_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds != seconds:  # NaN never equals itself
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    if delta < 0:
        return "just now"
    if delta < 60:
        return f"{int(delta)}s ago"
    if delta < 3600:
        return f"{int(delta // 60)}m ago"
    if delta < 86400:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def fmt_loss(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) >= 100 or (value != 0 and abs(value) < 0.001) else f"{value:.3f}"


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps type checkers content


def short_name(goal: str, max_len: int = 40) -> str:
    """A job name from the goal: the first few words, lowercase, dash-joined ("customer-support-bot")."""
    words = re.findall(r"[a-z0-9]+", goal.lower())
    name = ""
    for word in words[:6]:
        candidate = f"{name}-{word}" if name else word
        if len(candidate) > max_len:
            break
        name = candidate
    return name or (words[0][:max_len] if words else "fine-tune")


def metric(msg: Message, field: str) -> float | None:
    return getattr(msg, field) if msg.HasField(field) else None


# ---------------------------------------------------------------- messages → plain data


def to_plain(msg: Message) -> dict[str, Any]:
    """Like MessageToDict, but 64-bit ints stay numbers and unset optional fields read as null."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = {
                k: _plain_value(field.message_type.fields_by_name["value"], v) for k, v in value.items()
            }
        elif _is_repeated(field):
            out[field.name] = [_plain_value(field, v) for v in value]
        elif field.has_presence and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _plain_value(field, value)
    return out


def _is_repeated(field: FieldDescriptor) -> bool:
    # `label` is deprecated in newer protobuf releases; `is_repeated` replaces it.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == FieldDescriptor.LABEL_REPEATED  # pragma: no cover


def _plain_value(field: FieldDescriptor, value: Any) -> Any:
    if isinstance(value, timestamp_pb2.Timestamp):
        return ts_to_iso(value)
    if isinstance(value, Message):
        return to_plain(value)
    if field.enum_type is not None:
        name = field.enum_type.values_by_number.get(value)
        return name.name if name is not None else value
    if isinstance(value, bytes):
        return value.hex()
    return value


def job_to_dict(job: jobs_pb2.Job) -> dict[str, Any]:
    m = job.metrics
    return {
        "id": job.id,
        "state": state_name(job.state),
        "name": job.name,
        "owner": job.owner,
        "metrics": {
            "first_loss": metric(m, "first_loss"),
            "final_loss": metric(m, "final_loss"),
            "steps": m.steps,
            "total_steps": m.total_steps,
            "first_val_loss": metric(m, "first_val_loss"),
            "final_val_loss": metric(m, "final_val_loss"),
            "tokens_per_second": metric(m, "tokens_per_second"),
        },
        "artifacts": dict(job.artifacts),
        "error": job.error or None,
        "diagnosis": {"text": job.diagnosis, "brain": job.diagnosis_brain} if job.diagnosis else None,
        "attempts": [
            {
                "number": a.number,
                "outcome": a.outcome,
                "reason": a.reason or None,
                "started_at": ts_to_iso(a.started_at),
                "ended_at": ts_to_iso(a.ended_at),
                "resumed_from_step": a.resumed_from_step,
            }
            for a in job.attempts
        ],
        "queue_position": job.queue_position or None,
        "wait_reason": job.wait_reason or None,
        "host": job.host or None,  # while running on a shared queue: the forged host that runs it
        "created_at": ts_to_iso(job.created_at),
        "started_at": ts_to_iso(job.started_at),
        "finished_at": ts_to_iso(job.finished_at),
    }


def event_to_dict(ev: jobs_pb2.JobEvent) -> dict[str, Any]:
    """The runner protocol's shape ({kind: payload}) plus where the event sits in the job's history."""
    kind = ev.WhichOneof("payload")
    out: dict[str, Any] = {"seq": ev.seq, "time": ts_to_iso(ev.time)}
    if kind is not None:
        payload = to_plain(getattr(ev, kind))
        if kind == "state":
            payload["state"] = state_name(getattr(ev, kind).state)
        out[kind] = payload
    return out


def stats_to_dict(stats: brain_pb2.DatasetStats) -> dict[str, Any]:
    return to_plain(stats)


def plan_to_dict(
    prepared: brain_pb2.PrepareResponse, plan: brain_pb2.PlanResponse, spec: jobs_pb2.TrainSpec
) -> dict[str, Any]:
    return {
        "plan": to_plain(spec),
        "decisions": [{"field": d.field, "value": d.value, "reason": d.reason} for d in plan.decisions],
        "stats": stats_to_dict(prepared.stats),
        "brain": {"prepare": prepared.brain, "plan": plan.brain},
    }


# ---------------------------------------------------------------- human text


def prepare_summary(resp: brain_pb2.PrepareResponse) -> str:
    s = resp.stats
    layout = f", layout {s.layout}" if s.layout else ""
    fmt = f"{s.source_format}" if s.source_format else "data"
    text = (
        f"Read {s.rows_in} row{'s' if s.rows_in != 1 else ''} ({fmt}{layout}): "
        f"{s.train_examples} training and {s.val_examples} validation example"
        f"{'s' if s.val_examples != 1 else ''}"
    )
    if s.dropped:
        reasons = ", ".join(
            f"{n} {why}" for why, n in sorted(s.dropped_reasons.items(), key=lambda kv: -kv[1])
        )
        text += f"; dropped {s.dropped}" + (f" ({reasons})" if reasons else "")
    else:
        text += "; nothing dropped"
    if s.chars_max:
        text += f". Example length: median {s.chars_p50}, p95 {s.chars_p95}, max {s.chars_max} characters"
    text += f". Prepared by the {resp.brain or 'offline'} brain."
    return text


def decisions_table(plan: brain_pb2.PlanResponse, yours: Collection[str] = ()) -> Table:
    """Each planned value and why; the fields in `yours` were the user's choice and say so."""
    table = Table(title=f"Plan (decided by the {plan.brain or 'offline'} brain)", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_column("why", overflow="fold")
    for d in plan.decisions:
        table.add_row(d.field, f"{d.value} (yours)" if d.field in yours else d.value, d.reason)
    return table


def step_text(step: int, total: int, loss: float | None, tps: float | None, eta: float | None) -> str:
    parts = [f"step {step}/{total or '?'}"]
    if loss is not None:
        parts.append(f"loss {fmt_loss(loss)}")
    if tps:
        parts.append(f"{tps:,.0f} tok/s")
    if eta is not None and eta > 0:
        parts.append(f"eta {fmt_duration(eta)}")
    return "  ".join(parts)


def jobs_table(jobs: Iterable[jobs_pb2.Job], now: datetime | None = None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "STATE", "NAME", "OWNER", "STEP", "LOSS", "CREATED", "QUEUE"):
        table.add_column(col, no_wrap=col != "NAME")
    for job in jobs:
        state = state_name(job.state)
        m = job.metrics
        step = f"{m.steps}/{m.total_steps}" if m.total_steps else (str(m.steps) if m.steps else "-")
        table.add_row(
            job.id,
            Text(state, style=STATE_STYLE.get(state, "")),
            Text(job.name),
            job.owner,
            step,
            fmt_loss(metric(m, "final_loss")),
            fmt_ago(ts_to_datetime(job.created_at), now),
            str(job.queue_position) if job.queue_position else "-",
        )
    return table


def gpus_table(probe: hardware_pb2.ProbeResponse) -> Table:
    caption = []
    if probe.driver_version:
        caption.append(f"driver {probe.driver_version}")
    if probe.cuda_driver_version:
        caption.append(f"CUDA {probe.cuda_driver_version}")
    table = Table(caption=", ".join(caption) or None, caption_justify="left", header_style="bold")
    for col in ("#", "NAME", "ARCH", "CC", "MEMORY (free / total)", "UTIL", "MIG"):
        table.add_column(col)
    for g in probe.gpus:
        table.add_row(
            str(g.index),
            g.name,
            g.architecture or "-",
            g.compute_capability or "-",
            f"{fmt_bytes(g.memory_free_bytes)} / {fmt_bytes(g.memory_total_bytes)}",
            f"{g.utilization_percent}%",
            "yes" if g.mig_enabled else "no",
        )
    return table


def hardware_line(probe: hardware_pb2.ProbeResponse) -> str:
    host = f"{probe.cpu_count} CPU cores" + (
        f", {fmt_bytes(probe.memory_total_bytes)} RAM" if probe.memory_total_bytes else ""
    )
    if not probe.gpus:
        return f"{probe.message or 'no GPU found'}; {host}"
    gpus = "; ".join(
        f"GPU {g.index} {g.name}: {fmt_bytes(g.memory_free_bytes)} free of "
        f"{fmt_bytes(g.memory_total_bytes)}, {g.utilization_percent}% busy"
        for g in probe.gpus
    )
    return f"{gpus}; {host}"


def status_table(
    status: daemon_pb2.DaemonStatus, address: str, probe: hardware_pb2.ProbeResponse | None
) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    started = ts_to_datetime(status.started_at)
    uptime = fmt_duration((datetime.now(UTC) - started).total_seconds()) if started else "-"
    rows: list[tuple[str, str]] = [
        ("forged", f"{status.version} (pid {status.pid}, up {uptime})"),
        ("address", address),
        ("auth", status.auth or "-"),
        ("user", status.user + (" (admin)" if status.admin and status.auth == "token" else "")),
        ("database", status.database or "-"),
        ("state dir", status.state_dir or "-"),
        ("hardware", hardware_line(probe) if probe is not None else "unknown"),
        ("queue", f"{status.queued} queued, {status.running} running"),
    ]
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


def diagnosis_text(job: jobs_pb2.Job, indent: str = "") -> Text:
    """A failed job's diagnosis, saying which brain wrote it (the user always sees who decided)."""
    line = Text(indent)
    line.append(f"diagnosis ({job.diagnosis_brain or 'offline'}): ", style="bold yellow")
    line.append(job.diagnosis)
    return line


def diagnosis_lines(jobs: Iterable[jobs_pb2.Job]) -> list[Text]:
    """Under a jobs table: each failed job's diagnosis, by id."""
    return [
        Text(f"{job.id}  ").append(diagnosis_text(job))
        for job in jobs
        if job.state == jobs_pb2.JOB_STATE_FAILED and job.diagnosis
    ]


def wait_lines(jobs: Iterable[jobs_pb2.Job]) -> list[Text]:
    """Under a jobs table: why each queued job has not started (its position is in the QUEUE column)."""
    return [
        Text(f"{job.id}  waiting: {job.wait_reason}", style="dim")
        for job in jobs
        if job.state == jobs_pb2.JOB_STATE_QUEUED and job.wait_reason
    ]


def job_summary_lines(job: jobs_pb2.Job) -> list[Text]:
    """The end-of-job report: outcome, how the loss moved, where the outputs are, what to run next."""
    state = state_name(job.state)
    m = job.metrics
    lines: list[Text] = []
    head = Text()
    head.append(f"job {job.id} ")
    head.append(state, style=f"bold {STATE_STYLE.get(state, '')}")
    took = _took(job)
    if took:
        head.append(f" in {took}")
    if m.total_steps:
        head.append(f" ({m.steps}/{m.total_steps} steps)")
    lines.append(head)
    first, final = metric(m, "first_loss"), metric(m, "final_loss")
    if first is not None or final is not None:
        lines.append(Text(f"  loss      {fmt_loss(first)} → {fmt_loss(final)}"))
    vfirst, vfinal = metric(m, "first_val_loss"), metric(m, "final_val_loss")
    if vfirst is not None or vfinal is not None:
        lines.append(Text(f"  val loss  {fmt_loss(vfirst)} → {fmt_loss(vfinal)}"))
    if job.artifacts:
        lines.append(Text("  artifacts"))
        width = max(len(k) for k in job.artifacts)
        for name, path in sorted(job.artifacts.items()):
            lines.append(Text(f"    {name.ljust(width)}  {path}"))
    if job.error:
        lines.append(Text(f"  error: {job.error}", style="red"))
    if job.diagnosis:
        lines.append(diagnosis_text(job, indent="  "))
    if state == "succeeded":
        adapter = job.artifacts.get("adapter")
        if "ollama" in job.artifacts:
            ollama = job.artifacts["ollama"]
            lines.append(Text(f"next: forgectl inference --job {job.id}   (or: ollama run {ollama})"))
        elif "gguf" in job.artifacts:
            lines.append(Text(f"next: forgectl inference --job {job.id}"))
        elif adapter:
            lines.append(
                Text(
                    f'next: load the adapter with PEFT: PeftModel.from_pretrained(base_model, "{adapter}"); '
                    f"the full log: forgectl logs {job.id}",
                    style="dim",
                )
            )
        else:
            lines.append(Text(f"next: `forgectl logs {job.id}` for the full log", style="dim"))
    elif state in ("failed", "cancelled"):
        lines.append(Text(f"see what happened: forgectl logs {job.id}", style="dim"))
    return lines


def _took(job: jobs_pb2.Job) -> str | None:
    start, end = ts_to_datetime(job.started_at), ts_to_datetime(job.finished_at)
    if start is None or end is None:
        return None
    return fmt_duration((end - start).total_seconds())


def print_lines(con: Console, lines: Iterable[Text | str]) -> None:
    for line in lines:
        con.print(line)


def side_by_side(answers: list[tuple[str, str]]) -> Table:
    """`forgectl inference --compare-base`: one column per model, the same question."""
    table = Table(show_lines=False, expand=True)
    for label, _ in answers:
        table.add_column(label, ratio=1, overflow="fold")
    table.add_row(*(text for _, text in answers))
    return table
