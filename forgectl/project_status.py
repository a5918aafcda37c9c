"""`forgectl status` inside a project: its health (data, plan, jobs and what they produced)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from forge.v1 import jobs_pb2, projects_pb2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from forgectl import output
from forgectl.client import Client, ForgeError, rpc_code
from forgectl.project import Workspace, load_plan, load_prepared

PLAN_KEYS = (
    "epochs",
    "max_steps",
    "micro_batch_size",
    "grad_accum",
    "learning_rate",
    "lora_rank",
    "max_seq_len",
)
JOBS_SHOWN = 10


def _rows(ws: Workspace, relative: str) -> int | None:
    path = ws.path(relative)
    if not relative or not path.is_file():
        return None
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _known(client: Client, project_id: str) -> bool | None:
    try:
        client.projects.Get(projects_pb2.GetProjectRequest(id=project_id), timeout=10)
    except grpc.RpcError as exc:
        if rpc_code(exc) == grpc.StatusCode.NOT_FOUND:
            return False
        if rpc_code(exc) == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise
    return True


def gather(ws: Workspace, client: Client) -> dict[str, Any]:
    assert ws.project is not None
    health: dict[str, Any] = {
        "id": ws.project.id,
        "name": ws.project.name,
        "root": str(ws.root),
        "known_to_daemon": _known(client, ws.project.id),
    }
    prepared = load_prepared(ws)
    health["data"] = (
        None
        if prepared is None
        else {
            "source": prepared.source,
            "brain": prepared.brain,
            "prepared_at": prepared.prepared_at.isoformat(),
            "files": {
                f: _rows(ws, f) for f in (prepared.train_file, prepared.val_file, prepared.script_file) if f
            },
            "dropped": int(prepared.stats.get("dropped", 0)),
        }
    )
    try:
        config = ws.config()
        health["config_error"] = None
    except ForgeError as exc:
        config, health["config_error"] = None, exc.message
    plan = load_plan(ws)
    health["plan"] = (
        None
        if config is None or not config.model
        else {
            "model": config.model,
            "goal": config.goal,
            **{k: getattr(config.training, k) for k in PLAN_KEYS},
            "brain": config.brain.kind,
            "planned_by": plan.brain if plan else None,
            "planned_at": plan.planned_at.isoformat() if plan else None,
        }
    )
    found = client.jobs.List(jobs_pb2.ListJobsRequest(project=ws.project.id, limit=JOBS_SHOWN)).jobs
    health["jobs"] = list(found)
    return health


def to_json(health: dict[str, Any]) -> dict[str, Any]:
    return {**health, "jobs": [output.job_to_dict(j) for j in health["jobs"]]}


def render(con: Console, health: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False, title="project", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    known = health["known_to_daemon"]
    where = "" if known else (" — NOT known to this forged" if known is False else " — forged cannot say")
    table.add_row("project", Text(f"{health['name']} ({health['id']}) in {health['root']}{where}"))
    data = health["data"]
    if data is None:
        table.add_row("data", Text('not prepared: forgectl prepare FILE "GOAL"', style="yellow"))
    else:
        files = ", ".join(
            f"{name} ({rows} rows)" if rows is not None else f"{name} (missing)"
            for name, rows in data["files"].items()
        )
        when = output.fmt_ago(datetime.fromisoformat(data["prepared_at"]))
        table.add_row(
            "data", Text(f"{files}; prepared {when} by the {data['brain']} brain, {data['dropped']} dropped")
        )
    plan = health["plan"]
    if health["config_error"]:
        table.add_row("plan", Text(f"forge.yaml: {health['config_error']}", style="red"))
    elif plan is None:
        table.add_row("plan", Text('no plan: forgectl plan "GOAL"', style="yellow"))
    else:
        settings = ", ".join(f"{k} {plan[k]}" for k in PLAN_KEYS if plan[k] is not None)
        by = f"; planned by the {plan['planned_by']} brain" if plan["planned_by"] else ""
        table.add_row("plan", Text(f"model {plan['model']}: {settings}{by}"))
    jobs = health["jobs"]
    table.add_row("jobs", Text(f"{len(jobs)}" + ("" if jobs else ": none yet (forgectl train)")))
    con.print(table)
    if jobs:
        con.print(output.jobs_table(jobs))
        width = max((len(name) for job in jobs for name in job.artifacts), default=0)
        for job in jobs:
            for name, path in sorted(job.artifacts.items()):
                con.print(Text(f"  {job.id}  {name.ljust(width)}  {path}"))
