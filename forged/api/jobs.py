"""forge.v1.Jobs: submit, get, list, cancel, watch."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from forge.v1 import jobs_pb2, jobs_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.convert import job_to_pb, spec_to_dict
from forged.api.errors import ApiError, streaming, unary
from forged.api.projects import find_owned
from forged.brain.planner import estimate_memory
from forged.export import stage as export_stage
from forged.models.resolve import ModelError, check_local, hub_repo
from forged.queue.bus import EventBus
from forged.queue.scheduler import Scheduler
from forged.store.blobs import BlobStore
from forged.store.jobs import PB_TO_STATE, JobRecord, JobStore
from forged.store.projects import ProjectStore
from forged.store.users import Principal

_WATCH_PAGE = 500
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JobsService(jobs_pb2_grpc.JobsServicer):
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        bus: EventBus,
        scheduler: Scheduler,
        auth: Authenticator,
        jobs_root: Path,
        projects: ProjectStore | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.bus = bus
        self.scheduler = scheduler
        self.auth = auth
        self.jobs_root = jobs_root
        self.projects = projects

    def _owned(self, job_id: str, who: Principal) -> JobRecord:
        if not job_id:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "no job id given")
        # Another user's job reads as missing, so ids do not leak across users.
        return self.store.find(job_id, owner=None if who.admin else who.name)

    def _pb(self, job: JobRecord) -> jobs_pb2.Job:
        position = self.store.queue_position(job)
        return job_to_pb(job, position, self.scheduler.wait_reason(job, position))

    def _validate_export(self, spec: jobs_pb2.ExportSpec, who: Principal) -> JobRecord:
        """The job to export, resolved from an id or prefix; every problem as one actionable line."""
        options = export_stage.ExportOptions.from_spec({"quant": spec.quant, "ollama_name": spec.ollama_name,
            "no_ollama": spec.no_ollama, "register_only": spec.register_only})  # fmt: skip
        try:
            export_stage.check_options(options)
            source = self._owned(spec.source_job, who)
        except ValueError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if spec.register_only and "gguf" not in source.artifacts:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {source.id} has no GGUF to register: export it first (`forgectl export {source.id}`)",
            )
        if not spec.register_only and "adapter" not in source.artifacts:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {source.id} has no adapter: only a fine-tune that finished training can be exported",
            )
        return source

    def _validate(self, spec: jobs_pb2.JobSpec, who: Principal) -> None:
        if spec.project and self.projects is not None:
            find_owned(self.projects, spec.project, who)
        kind = spec.WhichOneof("kind")
        if kind == "export":
            source = self._validate_export(spec.export, who)
            spec.export.source_job = source.id  # a prefix the user typed becomes the full id
            spec.name = spec.name or f"export {source.name}"[:200]
            return
        if kind != "train":
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "the job spec has no work in it (expected train or export)"
            )
        train = spec.train
        if not train.train_data:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "no training data: upload it and prepare it first"
            )
        for label, digest in (("training", train.train_data), ("validation", train.val_data)):
            if digest and not self.blobs.may_read(digest, None if who.admin else who.name):
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{label} data {digest} is not an artifact of yours"
                )
        try:
            if check_local(train.model or "tiny") is None and _hub_offline():
                repo = hub_repo(train.model)
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {repo!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                    f"set: run `huggingface-cli download {repo}` where there is network, or pass "
                    "--model PATH",
                )
        except ModelError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if not spec.memory_bytes:
            # A client that did not plan (or an older one): the same estimate the plan would have given.
            spec.memory_bytes = estimate_memory(spec_to_dict(train))
        unfit = self.scheduler.unplaceable(spec_to_dict(spec))
        if unfit:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, unfit)

    @unary
    def Submit(self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        who = self.auth.principal(context)
        request_id = request.request_id or str(uuid.uuid4())
        if not _REQUEST_ID.match(request_id):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "request_id must be 1-128 of [A-Za-z0-9._:-]")
        self._validate(request.spec, who)
        name = request.spec.name.strip()[:200] or (request.spec.train.goal.strip()[:60] or "fine-tune")
        job, created = self.store.create(
            owner=who.name,
            request_id=request_id,
            name=name,
            priority=request.spec.priority,
            spec=spec_to_dict(request.spec),
            workspace_root=str(self.jobs_root),
        )
        if created:
            self.scheduler.poke()
        return self._pb(job)

    @unary
    def Get(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self._pb(self._owned(request.id, self.auth.principal(context)))

    @unary
    def List(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        who = self.auth.principal(context)
        if request.all_users and not who.admin:
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, "only an admin can list every user's jobs")
        owner = None if (who.admin and request.all_users) else who.name
        if self.auth.mode == "none":
            owner = None  # one person owns a per-user daemon, whatever name each client sends
        states = [PB_TO_STATE[s] for s in request.states if s in PB_TO_STATE]
        jobs = self.store.list(owner, states, limit=request.limit or 100, project=request.project)
        order = {jid: i + 1 for i, (jid, _owner) in enumerate(self.store.queue_order())}

        def pb(job: JobRecord) -> jobs_pb2.Job:
            position = order.get(job.id, 0)
            return job_to_pb(job, position, self.scheduler.wait_reason(job, position))

        return jobs_pb2.ListJobsResponse(jobs=[pb(j) for j in jobs])

    @unary
    def Cancel(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        job = self._owned(request.id, self.auth.principal(context))
        if job.terminal:
            return self._pb(job)
        job = self.store.request_cancel(job.id)
        self.scheduler.cancel(job.id)
        self.scheduler.wait_idle(job.id, timeout=10.0)
        return self._pb(self.store.get(job.id))

    @streaming
    def Watch(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[jobs_pb2.JobEvent]:
        job = self._owned(request.id, self.auth.principal(context))
        last = request.after_seq
        from_db = True  # the first read always checks the record
        while context.is_active() and not self.bus.closed:
            snap = self.bus.snapshot(job.id, last)
            if snap.events is None or from_db:
                # Read the job before its events: a job seen terminal has no events after these.
                terminal = self.store.get(job.id).terminal
                events = self.store.events_after(job.id, last, limit=_WATCH_PAGE)
            else:
                terminal, events = snap.terminal, snap.events
            for ev in events:
                yield ev
                last = ev.seq
            if len(events) == _WATCH_PAGE:
                continue
            if terminal or not request.follow:
                return
            # Woken by a new version: the bus has it. Woken by the timeout: look at the database, which
            # also sees events another forged wrote to a shared database.
            from_db = self.bus.wait(job.id, snap.version, timeout=1.0) == snap.version


def _hub_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
