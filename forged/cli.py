"""`forged`: run the daemon, or administer its users."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from forge import defaults
from pydantic import ValidationError

from forged.config import ConfigError, DaemonConfig, default_listen, parse_size


def _fail(message: str) -> None:
    click.echo(f"forged: {message}", err=True)
    sys.exit(2)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Database, artifacts, job workspaces, logs. [default: ~/.local/share/forge]",
)
@click.option(
    "--listen",
    default=None,
    help="unix://PATH or tcp://HOST:PORT. [default: $XDG_RUNTIME_DIR/forge/forged.sock]",
)
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL, e.g. postgresql://user@host/forge.")
@click.option(
    "--auth",
    type=click.Choice(["none", "token"]),
    default="none",
    show_default=True,
    help="token: every call needs a token from `forged token create` (shared GPU box).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--insecure-loopback", is_flag=True, help="Allow plain TCP on a loopback address.")
@click.option(
    "--max-jobs",
    type=int,
    default=None,
    help="Jobs that run at once. [default: one per GPU slot (see --jobs-per-gpu); 1 without a GPU]",
)
@click.option(
    "--jobs-per-gpu",
    default=1,
    show_default=True,
    help="Jobs that may share one GPU when their memory estimates fit side by side.",
)
@click.option(
    "--gpu-refresh",
    default=5.0,
    show_default=True,
    help="Seconds between NVML readings of the GPUs' free memory and utilisation.",
)
@click.option(
    "--max-jobs-per-user",
    default=0,
    show_default=True,
    help="Jobs one user may run at once on a shared box (0: no limit).",
)
@click.option(
    "--brain",
    type=click.Choice(["offline", "gemini", "local"]),
    default="offline",
    show_default=True,
    envvar="FORGE_BRAIN",
    help="The brain for requests that choose none (plan, prepare, a failed job's diagnosis).",
)
@click.option(
    "--brain-model", default="", envvar="FORGE_BRAIN_MODEL", help="e.g. gemini-2.5-flash, qwen2.5:7b."
)
@click.option(
    "--brain-endpoint",
    default="",
    envvar="FORGE_BRAIN_ENDPOINT",
    help="local brain: an OpenAI-compatible base URL. [default: Ollama's http://127.0.0.1:11434/v1]",
)
@click.option(
    "--allow-brain-endpoint",
    "allowed_brain_endpoints",
    multiple=True,
    envvar="FORGE_ALLOW_BRAIN_ENDPOINTS",
    help="Another OpenAI-compatible base URL that users may choose for a local brain (repeat it; '*' allows "
    "any, for a single-user machine). forged's own --brain-endpoint is always allowed.",
)
@click.option("--gemini-url", default="", envvar="FORGE_GEMINI_URL", help="Gemini API base URL (a proxy).")
@click.option("--brain-timeout", default=60.0, show_default=True, help="Seconds per LLM request.")
@click.option(
    "--diagnosis-timeout",
    default=60.0,
    show_default=True,
    help="Seconds a failed job waits for the brain's diagnosis before the offline rules answer.",
)
@click.option(
    "--host-id",
    default=None,
    help="This host's name in a shared queue (--db postgresql://...). [default: HOSTNAME:STATE_DIR]",
)
@click.option(
    "--shared-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Uploaded data and job workspaces (checkpoints). Several hosts on one queue need it on shared "
    "storage at the same path everywhere. [default: the state dir]",
)
@click.option(
    "--lease-seconds",
    default=30.0,
    show_default=True,
    help="A running job whose host has not renewed its lease for this long is taken over by another host.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "docker"]),
    default="local",
    show_default=True,
    envvar="FORGE_EXECUTOR",
    help="docker: each runner in a container of the runner image for its GPUs (docs/runner-images.md).",
)
@click.option(
    "--docker-repository",
    default="forge",
    show_default=True,
    help="Runner images are REPOSITORY:ARCH, e.g. forge:hopper, forge:cpu.",
)
@click.option(
    "--docker-memory",
    default=None,
    help="Memory limit per container, e.g. 48g; over it the job is OOM-killed and self-heals. "
    "[default: nine tenths of this machine's memory]",
)
@click.option(
    "--docker-pids", default=4096, show_default=True, help="Process and thread limit per container."
)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def main(
    ctx: click.Context,
    state_dir: Path | None,
    listen: str | None,
    db_url: str | None,
    auth: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_loopback: bool,
    max_jobs: int | None,
    jobs_per_gpu: int,
    gpu_refresh: float,
    max_jobs_per_user: int,
    brain: str,
    brain_model: str,
    brain_endpoint: str,
    allowed_brain_endpoints: tuple[str, ...],
    gemini_url: str,
    brain_timeout: float,
    diagnosis_timeout: float,
    host_id: str | None,
    shared_dir: Path | None,
    lease_seconds: float,
    executor: str,
    docker_repository: str,
    docker_memory: str | None,
    docker_pids: int,
    log_level: str,
) -> None:
    """The Forge daemon: owns the GPU queue, the runners and every job's state."""
    ctx.ensure_object(dict)
    ctx.obj["state_dir"] = state_dir
    if ctx.invoked_subcommand is not None:
        return
    from forged import logs
    from forged.daemon import Daemon

    try:
        config = DaemonConfig(
            state_dir=(state_dir or defaults.state_dir()).expanduser().resolve(),
            listen=listen or default_listen(state_dir.expanduser().resolve() if state_dir else None),
            db_url=db_url,
            auth=auth,
            tls_cert=tls_cert,
            tls_key=tls_key,
            insecure_loopback=insecure_loopback,
            max_running_jobs=max_jobs,
            jobs_per_gpu=jobs_per_gpu,
            gpu_refresh_seconds=gpu_refresh,
            max_jobs_per_user=max_jobs_per_user,
            brain=brain,
            brain_model=brain_model,
            brain_endpoint=brain_endpoint,
            allowed_brain_endpoints=allowed_brain_endpoints,
            gemini_url=gemini_url,
            brain_timeout=brain_timeout,
            diagnosis_timeout=diagnosis_timeout,
            host_id=host_id,
            shared_dir=shared_dir.expanduser().resolve() if shared_dir else None,
            lease_seconds=lease_seconds,
            executor=executor,
            docker_repository=docker_repository,
            docker_memory_bytes=parse_size(docker_memory) if docker_memory else None,
            docker_pids=docker_pids,
        )
    except (ConfigError, ValidationError) as exc:
        _fail(_first_error(exc))
        return
    logs.configure(config.state_dir / "forged.log", log_level)
    try:
        daemon = Daemon(config)
        address = daemon.start()
    except ConfigError as exc:
        _fail(str(exc))
        return
    click.echo(f"forged listening on {address}", err=True)
    daemon.serve_forever()


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return str(err.get("ctx", {}).get("error") or err["msg"])
    return str(exc)


@main.group()
def token() -> None:
    """Manage API tokens for shared-box mode."""


@token.command("create")
@click.argument("user")
@click.option("--admin", is_flag=True, help="May see and cancel every user's jobs.")
@click.option("--state-dir", "state_dir_opt", type=click.Path(path_type=Path), default=None)
@click.option("--db", "db_url", default=None)
@click.pass_context
def token_create(
    ctx: click.Context, user: str, admin: bool, state_dir_opt: Path | None, db_url: str | None
) -> None:
    """Create USER (or replace their token) and print the token as the last line."""
    from forged.daemon import open_database
    from forged.store.users import UserStore

    state_dir = (state_dir_opt or ctx.obj.get("state_dir") or defaults.state_dir()).expanduser().resolve()
    config = DaemonConfig(state_dir=state_dir, listen=default_listen(state_dir), db_url=db_url)
    try:
        token_value = UserStore(open_database(config)).create(user, admin=admin)
    except ValueError as exc:
        _fail(str(exc))
        return
    click.echo(f"token for {user}{' (admin)' if admin else ''}; it is shown only once:", err=True)
    click.echo(token_value)
