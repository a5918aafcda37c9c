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

from forgectl import brain_access, docker_probe, init_project, output, project_status
from forgectl import follow as following
from forgectl import ignite as igniting
from forgectl import plan as planning
from forgectl import prepare as preparing
from forgectl import project as projects
from forgectl import study_view as studying
from forgectl import train as training
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
@click.option(
    "--with",
    "with_files",
    multiple=True,
    metavar="FILE",
    help="A file the processing script may read beside the data, e.g. Spider's tables.json (repeatable).",
)
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
    with_files: tuple[str, ...],
    no_export: bool,
    dry_run: bool,
    detach: bool,
) -> None:
    """Fine-tune a model on FILE (csv, json, jsonl) toward GOAL, one sentence of intent."""
    path = check_data_file(file)
    extra = [check_data_file(f) for f in with_files]
    goal = " ".join(goal.split())
    if not goal:
        raise ForgeError("the goal is empty: say in one sentence what the model should do")
    ws = projects.workspace()  # run inside a project, the job is recorded as one of its jobs
    con = state.out()
    human = not state.json
    client = state.client()

    artifact = igniting.upload(client, path, con if human else None)
    sides = igniting.side_files(client, extra)
    prepared = igniting.prepare(client, artifact.digest, goal, seed, model, sides)
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

    project = ws.project.id if ws.project else ""
    job_spec = jobs_pb2.JobSpec(name=output.short_name(goal), train=spec, project=project)
    _submit_and_follow(state, client, job_spec, detach)


# ---------------------------------------------------------------- projects: init, login, prepare, plan, train


def _goal(goal: str) -> str:
    goal = " ".join(goal.split())
    if not goal:
        raise ForgeError("the goal is empty: say in one sentence what the model should do")
    return goal


def _outcome_line(label: str, outcome: brain_access.Outcome, fix: str = "") -> Text:
    if outcome.ok is None:
        return Text(f"{label}: {outcome.message}", style="yellow")
    if outcome.ok:
        return Text(f"{label}: ok, {outcome.message}", style="green")
    return Text(f"{label}: FAILED, {outcome.message}" + (f"; {fix}" if fix else ""), style="red")


@cli.command()
@click.argument("directory", metavar="[DIR]", default=".", required=False)
@click.option(
    "--brain",
    "brain_kind",
    type=click.Choice(projects.BRAIN_KINDS),
    default="offline",
    show_default=True,
    help="Who prepares and plans: offline rules (nothing leaves this machine), gemini, or a local LLM.",
)
@click.option("--brain-model", metavar="M", help="The brain's model, e.g. gemini-2.5-flash or qwen2.5:7b.")
@click.option(
    "--endpoint", metavar="URL", help="--brain local: an OpenAI-compatible URL (default: Ollama's)."
)
@_json_flag
@pass_state
def init(
    state: State, directory: str, brain_kind: str, brain_model: str | None, endpoint: str | None
) -> None:
    """Make DIR (default: here) a forge project: forge.yaml, data/, and the brain that prepares and plans."""
    root = Path(directory)
    init_project.refuse_existing(root)
    brain = brain_access.settings(brain_kind, brain_model, endpoint)
    key = brain_access.read_key("gemini") if brain.kind == "gemini" else None
    made = init_project.create(state.client(), root, brain, key)
    if state.json:
        output.emit_json(
            {
                "id": made.project.id,
                "name": made.project.name,
                "root": str(root.resolve()),
                "brain": brain.model_dump(),
                "key": None if made.key is None else {"ok": made.key.ok, "message": made.key.message},
                "check": {"ok": made.check.ok, "message": made.check.message},
            }
        )
        return
    con = state.out()
    con.print(f"created project {made.project.name} ({made.project.id}) in {root}")
    con.print(f"brain: {projects.BRAIN_REASON[brain.kind]}")
    if made.key is not None:
        con.print(_outcome_line("key", made.key))
    con.print(_outcome_line("brain check", made.check, "fix it with `forgectl login`"))
    here = "" if root.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    con.print(f'next: {here}forgectl prepare FILE "GOAL"', style="dim")


@cli.command()
@click.option(
    "--brain",
    "brain_kind",
    type=click.Choice(("gemini", "local")),
    help="Whose key (default: the project's brain, else gemini).",
)
@pass_state
def login(state: State, brain_kind: str | None) -> None:
    """Store or replace the API key forged uses for a brain, then check the brain answers with it."""
    ws = projects.workspace()
    config = ws.config() if ws.project else None
    kind = brain_kind or (config.brain.kind if config and config.brain.kind != "offline" else "gemini")
    brain = config.brain if config and config.brain.kind == kind else brain_access.settings(kind, None, None)
    key = brain_access.read_key(kind)
    client = state.client()
    stored = brain_access.store_key(client, kind, key)
    if not stored.ok:
        raise ForgeError(stored.message, EXIT_JOB_FAILED, "UNIMPLEMENTED" if stored.ok is None else "UNKNOWN")
    con = state.out()
    con.print(_outcome_line("key", stored))
    checked = brain_access.check(client, brain)
    if checked.ok is False:
        raise ForgeError(
            f"the {kind} brain does not answer with this key: {checked.message}", EXIT_JOB_FAILED
        )
    con.print(_outcome_line("brain check", checked))


@cli.command()
@click.argument("file")
@click.argument("goal")
@click.option(
    "--with",
    "with_files",
    multiple=True,
    metavar="SIDEFILE",
    help="A file the processing script may read beside the data, e.g. Spider's tables.json (repeatable).",
)
@click.option("--no-upload", is_flag=True, help="Never send samples of the data to an LLM brain.")
@click.option(
    "--script",
    "script_file",
    metavar="FILE",
    help="Run this processing script as is (say, your edited data/prepare_script.py); no brain is asked.",
)
@_json_flag
@pass_state
def prepare(
    state: State, file: str, goal: str, with_files: tuple[str, ...], no_upload: bool, script_file: str | None
) -> None:
    """Turn FILE into training data for GOAL: data/processed_train.jsonl, _val.jsonl and the script."""
    path = check_data_file(file)
    extra = [check_data_file(f) for f in with_files]
    goal = _goal(goal)
    script = ""
    if script_file:
        try:
            script = Path(script_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ForgeError(f"cannot read the script {script_file!r}: {exc}") from None
    ws = projects.workspace()
    if ws.project is None:
        click.echo(
            "not in a forge project (no .forge/project.json here or above): writing data/ and .forge/ in "
            "the current directory; `forgectl init` makes a project",
            err=True,
        )
    con = state.out()
    resp, record = preparing.run(
        ws, state.client(), path, goal, extra, no_upload, script, None if state.json else con
    )
    if state.json:
        output.emit_json(
            {
                "brain": record.brain,
                "stats": output.stats_to_dict(resp.stats),
                "sent": list(resp.sent),
                "notes": list(resp.notes),
                "repairs": resp.repairs,
                "files": [f for f in (record.train_file, record.val_file, record.script_file) if f],
                "project": ws.project.id if ws.project else None,
            }
        )
        return
    con.print(output.prepare_summary(resp))
    if resp.sent:
        con.print(f"sent to the {record.brain} brain:")
        for item in resp.sent:
            con.print(Text(f"  {item}"))
    else:
        con.print("sent: nothing left this machine")
    for note in resp.notes:
        con.print(Text(f"note: {note}"))
    if resp.repairs:
        con.print(f"the script was repaired {resp.repairs} time{'s' if resp.repairs != 1 else ''}")
    written = ", ".join(f for f in (record.train_file, record.val_file, record.script_file) if f)
    con.print(f"wrote {written}")
    con.print(f'next: forgectl plan "{goal}"', style="dim")


@cli.command()
@click.argument("goal")
@click.option(
    "--model", "-m", metavar="M", help="'tiny', a short name like qwen, an HF repo id, or a directory."
)
@click.option("--epochs", type=click.IntRange(min=1), metavar="N", help="Passes over the training data.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N", help="Examples per micro-batch.")
@click.option("--max-steps", type=click.IntRange(min=1), metavar="N", help="Stop after N optimizer steps.")
@_json_flag
@pass_state
def plan(
    state: State,
    goal: str,
    model: str | None,
    epochs: int | None,
    batch_size: int | None,
    max_steps: int | None,
) -> None:
    """Plan the fine-tune of the prepared data for GOAL and write forge.yaml, each value with its reason."""
    goal = _goal(goal)
    ws = projects.workspace()
    overrides = igniting.Overrides(model, epochs, max_steps, batch_size, None)
    planned, config, record = planning.run(ws, state.client(), goal, overrides)
    if state.json:
        output.emit_json(
            {
                "plan": output.to_plain(planned.spec),
                "decisions": [
                    {
                        "field": d.field,
                        "value": d.value,
                        "reason": d.reason,
                        "yours": d.field in record.overrides,
                    }
                    for d in planned.decisions
                ],
                "brain": record.brain,
                "memory_bytes": record.memory_bytes,
                "forge_yaml": str(ws.config_path),
            }
        )
        return
    con = state.out()
    con.print(output.decisions_table(planned, yours=record.overrides))
    if record.memory_bytes:
        con.print(f"estimated peak GPU memory: {output.fmt_bytes(record.memory_bytes)}")
    if config.model and (config.model == "tiny" or config.model.startswith("tiny-")):
        con.print(Text(output.tiny_note(config.model), style="yellow"))
    con.print(f"wrote {projects.CONFIG_FILE}: edit any value, and `forgectl train` uses yours")


@cli.command()
@click.option("--detach", "-d", is_flag=True, help="Submit and return at once with the job id.")
@_json_flag
@pass_state
def train(state: State, detach: bool) -> None:
    """Train what forge.yaml says (your edits included) on the prepared data, and follow the job."""
    ws = projects.workspace()
    config = training.load(ws)  # a hand-edit gone wrong is one line here, before any daemon call
    client = state.client()
    spec = training.job_spec(ws, config, client, notice=lambda m: click.echo(m, err=True))
    if not state.json and (spec.train.model == "tiny" or spec.train.model.startswith("tiny-")):
        state.out().print(Text(output.tiny_note(spec.train.model), style="yellow"))
    _submit_and_follow(state, client, spec, detach)


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
    _submit_and_follow(state, client, jobs_pb2.JobSpec(export=spec), detach)


def _submit_and_follow(state: State, client: Client, job_spec: jobs_pb2.JobSpec, detach: bool) -> None:
    """What ignite, export and train share once their spec is ready: submit, then return or follow."""
    job = igniting.submit(client, job_spec)
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
    mode = "quiet" if state.json else ("live" if con.is_terminal else "plain")
    # The header is inside: a Ctrl-C that lands while it is still being written (the user has read it, the
    # print has not returned) or before following begins detaches as the header promises.
    try:
        if not state.json:
            con.print(
                Text(
                    f"following job {job.id} ({job.name}); Ctrl-C detaches, the job keeps running",
                    style="dim",
                )
            )
        final = following.follow_job(client, job, following.make_display(con, mode))
    except KeyboardInterrupt:
        final = None
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
    output.print_lines(con, output.wait_lines(found))
    output.print_lines(con, output.diagnosis_lines(found))


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
    """The daemon, the hardware, the queue, and your newest jobs; in a project, its data, plan and jobs."""
    client = state.client()
    daemon = client.daemon.Status(daemon_pb2.DaemonStatusRequest())
    probe: hardware_pb2.ProbeResponse | None
    try:
        probe = client.hardware.Probe(hardware_pb2.ProbeRequest(), timeout=15.0)
    except grpc.RpcError:
        probe = None  # the hardware line is a courtesy; the daemon's own status is the answer
    recent = list(client.jobs.List(jobs_pb2.ListJobsRequest(limit=5)).jobs)
    ws = projects.workspace()
    health = project_status.gather(ws, client) if ws.project else None
    if state.json:
        output.emit_json(
            {
                "daemon": output.to_plain(daemon),
                "address": str(client.address),
                "hardware": output.to_plain(probe) if probe is not None else None,
                "queue": {"queued": daemon.queued, "running": daemon.running},
                "jobs": [output.job_to_dict(j) for j in recent],
                "project": project_status.to_json(health) if health else None,
            }
        )
        return
    con = state.out()
    con.print(output.status_table(daemon, str(client.address), probe))
    if health:
        con.print()
        project_status.render(con, health)
    elif recent:
        con.print()
        con.print(output.jobs_table(recent))
        output.print_lines(con, output.wait_lines(recent))
        output.print_lines(con, output.diagnosis_lines(recent))


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


@cli.group()
def docker() -> None:
    """Runner images on forged's machine (forged --executor docker)."""


_ARCH_OPTION = click.option(
    "--arch",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "blackwell", "hopper", "ada", "ampere", "cpu"]),
    help="auto: the image forged picks for this machine's GPUs.",
)


@docker.command()
@_ARCH_OPTION
@click.option(
    "--base", default="", help="Build on this image (on forged's engine) instead of the arch's own."
)
@click.option(
    "--wheelhouse",
    default="",
    metavar="DIR",
    help="Folder of wheels on forged's machine (python -m runner_image.wheelhouse): build with no network.",
)
@click.option("--dry-run", is_flag=True, help="Only show the exact docker build command.")
@_json_flag
@pass_state
def build(state: State, arch: str, base: str, wheelhouse: str, dry_run: bool) -> None:
    """Build the runner image on forged's machine, with the build's output as it comes.

    Offline (no registry, no package index): --base a local image (python -m runner_image.debian_base makes
    one) and --wheelhouse DIR."""
    # The folder is forged's, but forged and forgectl usually share a machine: a relative path means here.
    folder = os.path.abspath(os.path.expanduser(wheelhouse)) if wheelhouse else ""
    request = hardware_pb2.BuildImageRequest(arch=arch, dry_run=dry_run, base=base, wheelhouse=folder)
    last = hardware_pb2.BuildImageEvent()
    for event in state.client().hardware.BuildImage(request):
        if state.json:
            output.emit_json(output.to_plain(event))
        elif not event.done:
            click.echo(event.line)
        last = event
    if not last.done:
        raise ForgeError("forged stopped answering before the build ended", EXIT_JOB_FAILED)
    if last.exit_code != 0:
        raise ForgeError(
            f"building {last.image} failed (exit status {last.exit_code}); the build's output is above",
            EXIT_JOB_FAILED,
        )


@docker.command()
@_ARCH_OPTION
@_json_flag
@pass_state
def probe(state: State, arch: str) -> None:
    """Run the runner image's smoke test where forged runs jobs: what torch sees inside it."""
    found = state.client().hardware.ProbeImage(hardware_pb2.ProbeImageRequest(arch=arch), timeout=900.0)
    if state.json:
        output.emit_json(docker_probe.as_json(found))
    else:
        con = state.out()
        for line in docker_probe.lines(found):
            con.print(line, markup=False)
    if not found.ok:
        raise ForgeError(f"{found.image} cannot train on this machine: {found.reason}", EXIT_JOB_FAILED)


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
