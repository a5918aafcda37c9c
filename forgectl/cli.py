"""forgectl: the Forge command line. Every verb is a few gRPC calls to forged; the work happens there."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import grpc
from forge.export_options import DEFAULT_QUANT, QUANTS
from forge.study_report import StudyReport
from forge.v1 import brain_pb2, daemon_pb2, hardware_pb2, jobs_pb2
from rich.console import Console
from rich.text import Text

from forgectl import follow as following
from forgectl import ignite as igniting
from forgectl import output
from forgectl import study_view as studying
from forgectl.client import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    Client,
    ForgeError,
    check_data_file,
    connect,
    from_rpc_error,
)

F = TypeVar("F", bound=Callable[..., Any])
STATE_CHOICES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass
class State:
    daemon: str | None = None
    tls_ca: str | None = None
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        # Connect lazily, so local checks (and --help) never start or wait for a daemon.
        if self._client is None:
            self._client = connect(self.daemon, self.tls_ca, notice=lambda m: click.echo(m, err=True))
        return self._client

    def out(self) -> Console:
        return output.console()


class ForgeGroup(click.Group):
    """Turns every ForgeError and gRPC error into one line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ForgeError as exc:
            _fail(ctx, exc)
        except grpc.RpcError as exc:
            _fail(ctx, from_rpc_error(exc))


def _fail(ctx: click.Context, exc: ForgeError) -> NoReturn:
    state = ctx.find_object(State)
    output.error_line(exc.message, exc.code, bool(state and state.json))
    ctx.exit(exc.exit_code)


def _json_flag(fn: F) -> F:
    """`forgectl jobs --json` reads as naturally as `forgectl --json jobs`; accept both."""

    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(State).json = True

    return click.option(
        "--json", "json_", is_flag=True, expose_value=False, callback=mark, help="Machine-readable output."
    )(fn)


def _version() -> str:
    try:
        return metadata.version("forge-llm")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(cls=ForgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--daemon",
    envvar="FORGE_DAEMON",
    metavar="ADDR",
    help="forged's address: unix:///abs/path, unix:relpath or tcp://host:port [env FORGE_DAEMON]. "
    "Default: the per-user daemon, started on demand.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on every command.")
@click.option(
    "--tls-ca",
    envvar="FORGE_TLS_CA",
    metavar="FILE",
    help="CA certificate to verify a tcp:// daemon over TLS [env FORGE_TLS_CA].",
)
@click.version_option(_version(), prog_name="forgectl")
@click.pass_context
def cli(ctx: click.Context, daemon: str | None, as_json: bool, tls_ca: str | None) -> None:
    """Fine-tune open LLMs from a data file and one sentence of intent."""
    state = ctx.ensure_object(State)
    state.daemon = daemon or None
    state.tls_ca = tls_ca or None
    state.json = state.json or as_json


pass_state = click.make_pass_decorator(State, ensure=True)


# ---------------------------------------------------------------- ignite


@cli.command()
@click.argument("file")
@click.argument("goal")
@click.option("--model", "-m", metavar="M", help="'tiny', an HF repo id, or a local model directory.")
@click.option("--epochs", type=click.IntRange(min=1), metavar="N", help="Passes over the training data.")
@click.option("--max-steps", type=click.IntRange(min=1), metavar="N", help="Stop after N optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N", help="Examples per micro-batch.")
@click.option("--seed", type=click.IntRange(min=0), metavar="N", help="Seed for the split and training.")
@click.option("--no-export", is_flag=True, help="Keep the adapter only: no merge, GGUF, Ollama.")
@click.option("--dry-run", is_flag=True, help="Upload, prepare and plan, then stop: nothing is submitted.")
@click.option("--detach", "-d", is_flag=True, help="Submit and return at once with the job id.")
@_json_flag
@pass_state
def ignite(
    state: State,
    file: str,
    goal: str,
    model: str | None,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int | None,
    seed: int | None,
    no_export: bool,
    dry_run: bool,
    detach: bool,
) -> None:
    """Fine-tune a model on FILE (csv, json, jsonl) toward GOAL, one sentence of intent."""
    path = check_data_file(file)
    goal = " ".join(goal.split())
    if not goal:
        raise ForgeError("the goal is empty: say in one sentence what the model should do")
    con = state.out()
    human = not state.json
    client = state.client()

    artifact = igniting.upload(client, path, con if human else None)
    prepared = igniting.prepare(client, artifact.digest, goal, seed)
    if human:
        con.print(output.prepare_summary(prepared))
    overrides = igniting.Overrides(model, epochs, max_steps, batch_size, seed)
    planned = igniting.plan(client, goal, prepared.stats, overrides)
    spec = igniting.final_spec(planned, prepared, goal, export=not no_export)
    if human:
        con.print(output.decisions_table(planned))
        if spec.model == "tiny" or spec.model.startswith("tiny-"):
            con.print(Text(output.tiny_note(spec.model), style="yellow"))
    if dry_run:
        if state.json:
            output.emit_json(output.plan_to_dict(prepared, planned, spec))
        else:
            con.print("dry run: nothing submitted.", style="dim")
        return

    job = igniting.submit(client, jobs_pb2.JobSpec(name=output.short_name(goal), train=spec))
    if detach:
        _detached(state, job)
        return
    _follow_and_exit(state, client, job)


# ---------------------------------------------------------------- study


@cli.command()
@click.argument("file")
@click.option("--goal", "-g", metavar="G", help="What the model should do: is there a target column for it?")
@click.option("--model", "-m", metavar="M", help="Count tokens with M's tokenizer (default: the planner's).")
@click.option("--png", "png", metavar="PATH", help="Where to write the token-length histogram.")
@_json_flag
@pass_state
def study(state: State, file: str, goal: str | None, model: str | None, png: str | None) -> None:
    """What is in FILE, what is wrong with it, and whether it can serve GOAL. Changes nothing."""
    path = check_data_file(file)
    con = state.out()
    client = state.client()
    artifact = igniting.upload(client, path, None if state.json else con)
    request = brain_pb2.StudyRequest(
        data=artifact.digest, goal=" ".join((goal or "").split()), model=model or ""
    )
    response = client.brain.Study(request)
    report = StudyReport.model_validate_json(response.report_json)
    cwd = Path.cwd()
    wanted = Path(png).expanduser() if png else studying.default_png_path(path, cwd)
    try:
        written, moved = studying.write_png(response.length_histogram_png, wanted, bool(png), cwd)
    except OSError as exc:
        raise ForgeError(f"cannot write the histogram to {wanted}: {exc.strerror or exc}") from None
    notes = [moved] if moved else []
    tables = path.with_name("tables.json")
    if report.finding("schema_elsewhere") is not None and tables.is_file():
        notes.append(f"found {tables}: give it to prepare as the schema side file")
    if state.json:
        output.emit_json(report.model_dump(mode="json"))
        click.echo(f"token-length histogram: {written}", err=True)
        return
    con.print(studying.render(report, written, notes))


# ---------------------------------------------------------------- export


def _newest_job_with(client: Client, artifact: str) -> jobs_pb2.Job:
    found = client.jobs.List(jobs_pb2.ListJobsRequest(states=[jobs_pb2.JOB_STATE_SUCCEEDED], limit=100)).jobs
    for job in found:  # newest first
        if artifact in job.artifacts:
            return job
    what = "a GGUF" if artifact == "gguf" else "an adapter"
    raise ForgeError(f"no finished job with {what} to export: run `forgectl ignite` first, or name a JOB")


@cli.command()
@click.argument("job_id", metavar="[JOB]", required=False)
@click.option(
    "--quant",
    type=click.Choice(QUANTS, case_sensitive=False),
    default=DEFAULT_QUANT,
    show_default=True,
    help="GGUF type: f16 keeps 16-bit weights; q8_0, q4_0, q4_k_m are smaller.",
)
@click.option("--name", metavar="NAME", help="The Ollama model name (default: from the job's name).")
@click.option("--no-ollama", is_flag=True, help="Write the GGUF only; do not register it with Ollama.")
@click.option("--register-only", is_flag=True, help="Register JOB's existing GGUF with Ollama; nothing else.")
@click.option("--skip-verify", is_flag=True, help="Skip the parity gate (the GGUF against the merged model).")
@click.option("--detach", "-d", is_flag=True, help="Submit and return at once with the job id.")
@_json_flag
@pass_state
def export(
    state: State,
    job_id: str | None,
    quant: str,
    name: str | None,
    no_ollama: bool,
    register_only: bool,
    skip_verify: bool,
    detach: bool,
) -> None:
    """Merge JOB's adapter into its base, write a GGUF, check it and register it with Ollama.

    JOB defaults to your newest finished fine-tune.
    """
    if register_only and no_ollama:
        raise ForgeError("--register-only and --no-ollama contradict each other: pick one")
    client = state.client()
    source = job_id or _newest_job_with(client, "gguf" if register_only else "adapter").id
    spec = jobs_pb2.ExportSpec(
        source_job=source,
        quant=quant.lower(),
        ollama_name=name or "",
        no_ollama=no_ollama,
        register_only=register_only,
        skip_verify=skip_verify,
    )
    job = igniting.submit(client, jobs_pb2.JobSpec(export=spec))
    if detach:
        _detached(state, job)
        return
    _follow_and_exit(state, client, job)


def _detached(state: State, job: jobs_pb2.Job) -> None:
    if state.json:
        output.emit_json({"id": job.id})
        return
    con = state.out()
    con.print(f"submitted job {job.id} ({output.state_name(job.state)})")
    con.print(f"watch it with: forgectl watch {job.id}", style="dim")


# ---------------------------------------------------------------- inference


@cli.command()
@click.argument("prompt", required=False)
@click.option("--job", "job_id", metavar="JOB", help="The exported job (default: your newest one).")
@click.option("--compare-base", is_flag=True, help="Also answer with the base model, side by side.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True, metavar="N")
@pass_state
def inference(
    state: State, prompt: str | None, job_id: str | None, compare_base: bool, max_tokens: int
) -> None:
    """Ask the fine-tuned model PROMPT (streamed), or chat with it when no PROMPT is given."""
    from forgectl import inference as chat

    client = state.client()
    job = _get_job(client, job_id) if job_id else _newest_job_with(client, "gguf")
    con = state.out()

    def notice(message: str) -> None:
        click.echo(message, err=True)

    tuned = chat.pick_engine(job, max_tokens, notice)
    base = chat.base_engine(job, max_tokens) if compare_base else None
    notice(f"answering with {tuned.label}" + (f"; base model via {base.label}" if base else ""))
    history: list[dict[str, str]] = []

    def ask(text: str) -> None:
        history.append({"role": "user", "content": text})
        if base is not None:
            answers = [(e.label, e.reply(history, lambda _piece: None)) for e in (base, tuned)]
            con.print(output.side_by_side(answers))
            history.append({"role": "assistant", "content": answers[1][1]})
            return
        answer = tuned.reply(history, lambda piece: click.echo(piece, nl=False))
        click.echo()
        history.append({"role": "assistant", "content": answer})

    if prompt is not None:
        ask(prompt)
        return
    notice("chat: an empty line or Ctrl-D ends it")
    while True:
        try:
            text = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if not text:
            return
        ask(text)


# ---------------------------------------------------------------- watching


def _follow_and_exit(state: State, client: Client, job: jobs_pb2.Job) -> NoReturn:
    ctx = click.get_current_context()
    con = state.out()
    if state.json:
        mode = "quiet"
    else:
        mode = "live" if con.is_terminal else "plain"
        con.print(
            Text(f"following job {job.id} ({job.name}); Ctrl-C detaches, the job keeps running", style="dim")
        )
    final = following.follow_job(client, job, following.make_display(con, mode))
    if final is None:
        click.echo(following.DETACH_MESSAGE.format(id=job.id), err=state.json)
        ctx.exit(EXIT_OK)
    if state.json:
        output.emit_json(output.job_to_dict(final))
    else:
        output.print_lines(con, output.job_summary_lines(final))
    ctx.exit(EXIT_OK if final.state == jobs_pb2.JOB_STATE_SUCCEEDED else EXIT_JOB_FAILED)


def _get_job(client: Client, job_id: str) -> jobs_pb2.Job:
    return client.jobs.Get(jobs_pb2.GetJobRequest(id=job_id))


@cli.command()
@click.argument("job_id", metavar="JOB")
@_json_flag
@pass_state
def watch(state: State, job_id: str) -> None:
    """Follow JOB live until it ends (Ctrl-C detaches; the job keeps running)."""
    client = state.client()
    _follow_and_exit(state, client, _get_job(client, job_id))


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the job ends.")
@_json_flag
@pass_state
def logs(state: State, job_id: str, follow: bool) -> None:
    """Print JOB's log: messages, errors, and compact progress lines."""
    client = state.client()
    job = _get_job(client, job_id)
    con = state.out()

    def open_watch(seq: int) -> Any:
        return client.jobs.Watch(jobs_pb2.WatchJobRequest(id=job.id, after_seq=seq, follow=follow))

    def job_done() -> bool:
        return _get_job(client, job.id).state in output.TERMINAL_STATES

    stream = following.EventStream(open_watch, follow=follow, job_done=job_done)
    try:
        for item in stream:
            if isinstance(item, following.Notice):
                click.echo(item.text, err=True)
            elif state.json:
                output.emit_json(output.event_to_dict(item))
            elif (line := following.event_line(item)) is not None:
                con.print(line)
    except KeyboardInterrupt:
        stream.cancel()  # like `tail -f`: Ctrl-C is how you stop reading, not a failure


# ---------------------------------------------------------------- the queue


@cli.command()
@click.option("--all", "all_users", is_flag=True, help="Every user's jobs (admins on a shared daemon).")
@click.option(
    "--state",
    "states",
    type=click.Choice(STATE_CHOICES, case_sensitive=False),
    multiple=True,
    help="Only jobs in this state (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N jobs.")
@_json_flag
@pass_state
def jobs(state: State, all_users: bool, states: tuple[str, ...], limit: int) -> None:
    """List jobs, newest first."""
    request = jobs_pb2.ListJobsRequest(
        states=[jobs_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states],
        all_users=all_users,
        limit=limit,
    )
    found = list(state.client().jobs.List(request).jobs)
    if state.json:
        for job in found:
            output.emit_json(output.job_to_dict(job))
        return
    con = state.out()
    if not found:
        con.print("no jobs" + (f" in state {', '.join(states)}" if states else "") + ".")
        return
    con.print(output.jobs_table(found))


@cli.command()
@click.argument("job_id", metavar="JOB")
@_json_flag
@pass_state
def cancel(state: State, job_id: str) -> None:
    """Cancel JOB (a running job stops at once; its checkpoints stay)."""
    job = state.client().jobs.Cancel(jobs_pb2.CancelJobRequest(id=job_id))
    if state.json:
        output.emit_json(output.job_to_dict(job))
        return
    name = output.state_name(job.state)
    line = Text(f"job {job.id}: ")
    line.append(name, style=output.STATE_STYLE.get(name, ""))
    state.out().print(line)


# ---------------------------------------------------------------- the daemon and the machine


@cli.command()
@_json_flag
@pass_state
def status(state: State) -> None:
    """The daemon, the hardware, the queue, and your newest jobs."""
    client = state.client()
    daemon = client.daemon.Status(daemon_pb2.DaemonStatusRequest())
    probe: hardware_pb2.ProbeResponse | None
    try:
        probe = client.hardware.Probe(hardware_pb2.ProbeRequest(), timeout=15.0)
    except grpc.RpcError:
        probe = None  # the hardware line is a courtesy; the daemon's own status is the answer
    recent = list(client.jobs.List(jobs_pb2.ListJobsRequest(limit=5)).jobs)
    if state.json:
        output.emit_json(
            {
                "daemon": output.to_plain(daemon),
                "address": str(client.address),
                "hardware": output.to_plain(probe) if probe is not None else None,
                "queue": {"queued": daemon.queued, "running": daemon.running},
                "jobs": [output.job_to_dict(j) for j in recent],
            }
        )
        return
    con = state.out()
    con.print(output.status_table(daemon, str(client.address), probe))
    if recent:
        con.print()
        con.print(output.jobs_table(recent))


@cli.command()
@_json_flag
@pass_state
def gpus(state: State) -> None:
    """The GPUs forged can schedule on."""
    probe = state.client().hardware.Probe(hardware_pb2.ProbeRequest(), timeout=30.0)
    if state.json:
        output.emit_json(output.to_plain(probe))
        return
    con = state.out()
    if not probe.gpus:
        # No GPU is an answer about this machine, not a failure of the command.
        con.print(probe.message or "no NVIDIA GPU found")
        return
    con.print(output.gpus_table(probe))


def main() -> None:
    try:
        cli(prog_name=_prog_name())
    except BrokenPipeError:
        # `forgectl jobs | head`: the reader left, which is not worth a traceback; point stdout at
        # /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)


def _prog_name() -> str:
    name = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "forgectl"
    return name if name in ("forge", "forgectl") else "forgectl"
