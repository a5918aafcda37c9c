"""`forgectl ignite`: upload, prepare, plan, submit — each step a daemon call, each shown as it happens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from forge.v1 import artifacts_pb2, brain_pb2, jobs_pb2
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from forgectl.client import Client, ForgeError, rpc_code, upload_requests

PROGRESS_BAR_ABOVE = 8 << 20
SUBMIT_RETRY_WAIT_S = 1.0


@dataclass(frozen=True)
class Overrides:
    """What the user set on the command line; unset means the planner decides."""

    model: str | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None

    def to_spec(self) -> jobs_pb2.TrainSpec:
        spec = jobs_pb2.TrainSpec()
        if self.model:
            spec.model = self.model
        if self.epochs:
            spec.epochs = self.epochs
        if self.max_steps:
            spec.max_steps = self.max_steps
        if self.batch_size:
            spec.micro_batch_size = self.batch_size
        if self.seed is not None:
            spec.seed = self.seed
        return spec


def upload(client: Client, path: Path, con: Console | None) -> artifacts_pb2.Artifact:
    """Stream the file to the daemon's artifact store; a bar only when the wait is long enough to notice."""
    size = path.stat().st_size
    if con is None or size <= PROGRESS_BAR_ABOVE:
        return client.artifacts.Upload(upload_requests(path))
    with Progress(
        "uploading",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=con,
        transient=True,
    ) as bar:
        task = bar.add_task("upload", total=size)

        def advance(n: int) -> None:
            bar.advance(task, n)

        return client.artifacts.Upload(upload_requests(path, advance))


def side_files(client: Client, paths: list[Path]) -> list[brain_pb2.SideFile]:
    """Upload the files the processing script may read beside the data (e.g. Spider's tables.json)."""
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ForgeError(
            f"--with files need distinct names (the script sees them by name): {', '.join(names)}"
        )
    return [brain_pb2.SideFile(name=p.name, data=upload(client, p, None).digest) for p in paths]


def prepare(
    client: Client,
    digest: str,
    goal: str,
    seed: int | None,
    model: str | None = None,
    sides: list[brain_pb2.SideFile] | None = None,
) -> brain_pb2.PrepareResponse:
    """`model` (--model) counts the tokens in the stats with that model's tokenizer; None: the default."""
    request = brain_pb2.PrepareRequest(data=digest, goal=goal, seed=seed or 0, model=model or "")
    request.side_files.extend(sides or [])
    return client.brain.Prepare(request)


def plan(
    client: Client, goal: str, stats: brain_pb2.DatasetStats, overrides: Overrides
) -> brain_pb2.PlanResponse:
    return client.brain.Plan(brain_pb2.PlanRequest(goal=goal, stats=stats, overrides=overrides.to_spec()))


def final_spec(
    planned: brain_pb2.PlanResponse, prepared: brain_pb2.PrepareResponse, goal: str, export: bool
) -> jobs_pb2.TrainSpec:
    spec = jobs_pb2.TrainSpec()
    spec.CopyFrom(planned.spec)
    spec.train_data = prepared.train_data
    spec.val_data = prepared.val_data
    spec.goal = spec.goal or goal
    spec.export = export
    return spec


def submit(
    client: Client,
    job_spec: jobs_pb2.JobSpec,
    request_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> jobs_pb2.Job:
    """Submit once more on UNAVAILABLE with the same request id: the daemon dedupes, so no double job."""
    request = jobs_pb2.SubmitJobRequest(request_id=request_id or str(uuid.uuid4()), spec=job_spec)
    try:
        return client.jobs.Submit(request)
    except grpc.RpcError as exc:
        if rpc_code(exc) != grpc.StatusCode.UNAVAILABLE:
            raise
    sleep(SUBMIT_RETRY_WAIT_S)
    return client.jobs.Submit(request, wait_for_ready=True, timeout=30.0)
