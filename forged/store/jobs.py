"""Jobs, their attempts and their event log. Every state change and its event commit together."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forge.v1 import jobs_pb2
from google.protobuf import json_format
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from forged.store.db import Database
from forged.store.models import Attempt, Event, Job

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
# running -> queued is how an interrupted attempt (daemon shutdown or crash) goes back to the queue.
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, QUEUED}),
}
STATE_TO_PB = {
    QUEUED: jobs_pb2.JOB_STATE_QUEUED,
    RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    FAILED: jobs_pb2.JOB_STATE_FAILED,
    CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}


class JobNotFound(LookupError):
    pass


class AmbiguousJobId(LookupError):
    pass


class InvalidTransition(RuntimeError):
    pass


@dataclass
class AttemptRecord:
    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    reason: str
    resumed_from_step: int
    host: str
    pid: int | None
    pid_started: float | None


@dataclass
class JobRecord:
    id: str
    owner: str
    request_id: str
    name: str
    state: str
    priority: int
    spec: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, str]
    error: str
    workspace: str
    last_seq: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def new_job_id() -> str:
    return "j-" + secrets.token_hex(5)


def _now() -> datetime:
    return datetime.now(UTC)


def _record(job: Job, attempts: list[Attempt]) -> JobRecord:
    return JobRecord(
        id=job.id,
        owner=job.owner,
        request_id=job.request_id,
        name=job.name,
        state=job.state,
        priority=job.priority,
        spec=dict(job.spec),
        metrics=dict(job.metrics or {}),
        artifacts=dict(job.artifacts or {}),
        error=job.error,
        workspace=job.workspace,
        last_seq=job.last_seq,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=[
            AttemptRecord(
                a.number,
                a.started_at,
                a.ended_at,
                a.outcome,
                a.reason,
                a.resumed_from_step,
                a.host,
                a.pid,
                a.pid_started,
            )
            for a in sorted(attempts, key=lambda a: a.number)
        ],
    )


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- creation and lookup -------------------------------------------------------------------------
    def create(
        self, owner: str, request_id: str, name: str, priority: int, spec: dict[str, Any], workspace_root: str
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; a repeated (owner, request_id) returns the first job instead."""
        existing = self._by_request(owner, request_id)
        if existing is not None:
            return existing, False
        job_id = new_job_id()
        try:
            with self.db.write() as s:
                job = Job(
                    id=job_id,
                    owner=owner,
                    request_id=request_id,
                    name=name,
                    state=QUEUED,
                    priority=priority,
                    spec=spec,
                    metrics={},
                    artifacts={},
                    error="",
                    workspace=f"{workspace_root}/{job_id}",
                    last_seq=0,
                    cancel_requested=False,
                    created_at=_now(),
                )
                s.add(job)
                s.flush()
                self._append(
                    s,
                    job_id,
                    jobs_pb2.JobEvent(
                        state=jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_QUEUED, reason="submitted")
                    ),
                )
        except IntegrityError:
            # Two retries of one submit raced; the loser returns the winner's job.
            existing = self._by_request(owner, request_id)
            if existing is None:
                raise
            return existing, False
        return self.get(job_id), True

    def _by_request(self, owner: str, request_id: str) -> JobRecord | None:
        with self.db.read() as s:
            job = s.scalar(select(Job).where(Job.owner == owner, Job.request_id == request_id))
            return None if job is None else self._load(s, job)

    def _load(self, s: Session, job: Job) -> JobRecord:
        attempts = list(s.scalars(select(Attempt).where(Attempt.job_id == job.id)))
        return _record(job, attempts)

    def get(self, job_id: str) -> JobRecord:
        with self.db.read() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            return self._load(s, job)

    def find(self, id_or_prefix: str, owner: str | None) -> JobRecord:
        """Exact id, or a unique prefix like docker's; `owner` None means any owner (admins)."""
        with self.db.read() as s:
            q = select(Job).where(Job.id.startswith(id_or_prefix, autoescape=True)).limit(2)
            if owner is not None:
                q = q.where(Job.owner == owner)
            exact = s.get(Job, id_or_prefix)
            if exact is not None and (owner is None or exact.owner == owner):
                return self._load(s, exact)
            found = list(s.scalars(q))
            if not found:
                raise JobNotFound(id_or_prefix)
            if len(found) > 1:
                raise AmbiguousJobId(id_or_prefix)
            return self._load(s, found[0])

    def list(self, owner: str | None, states: list[str] | None = None, limit: int = 100) -> list[JobRecord]:
        with self.db.read() as s:
            q = select(Job).order_by(Job.created_at.desc()).limit(limit)
            if owner is not None:
                q = q.where(Job.owner == owner)
            if states:
                q = q.where(Job.state.in_(states))
            return [self._load(s, j) for j in s.scalars(q)]

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())  # type: ignore[arg-type]

    def queue_order(self) -> list[str]:
        """Queued job ids in the order they will run: priority first, then submission time."""
        with self.db.read() as s:
            q = (
                select(Job.id)
                .where(Job.state == QUEUED)
                .order_by(Job.priority.desc(), Job.created_at, Job.id)
            )
            return list(s.scalars(q))

    # -- state machine -----------------------------------------------------------------------------
    def transition(self, job_id: str, to: str, reason: str, error: str | None = None) -> JobRecord:
        with self.db.write() as s:
            self._transition(s, job_id, to, reason, error)
        return self.get(job_id)

    def _transition(
        self, s: Session, job_id: str, to: str, reason: str, error: str | None = None
    ) -> None:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if to not in TRANSITIONS.get(job.state, frozenset()):
            raise InvalidTransition(f"job {job_id} cannot go from {job.state} to {to}")
        job.state = to
        now = _now()
        if to == RUNNING and job.started_at is None:
            job.started_at = now
        if to in TERMINAL:
            job.finished_at = now
        if error is not None:
            job.error = error
        attempt_no = s.scalar(select(func.max(Attempt.number)).where(Attempt.job_id == job_id)) or 0
        self._append(
            s,
            job_id,
            jobs_pb2.JobEvent(
                state=jobs_pb2.StateEvent(state=STATE_TO_PB[to], reason=reason, attempt=attempt_no)
            ),
        )

    def claim(self, job_id: str, host: str) -> JobRecord | None:
        """queued -> running with a new attempt row; None if someone else got there first."""
        with self.db.write() as s:
            # FOR UPDATE is a no-op on SQLite (forged's write lock serialises) and a row lock on PostgreSQL.
            job = s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
            if job is None or job.state != QUEUED:
                return None
            number = (s.scalar(select(func.max(Attempt.number)).where(Attempt.job_id == job_id)) or 0) + 1
            s.add(Attempt(job_id=job_id, number=number, started_at=_now(), outcome="running", host=host))
            s.flush()
            self._transition(s, job_id, RUNNING, f"attempt {number} started")
        return self.get(job_id)

    def set_attempt_process(self, job_id: str, pid: int, pid_started: float, resumed_from_step: int) -> None:
        with self.db.write() as s:
            a = self._current_attempt(s, job_id)
            a.pid, a.pid_started, a.resumed_from_step = pid, pid_started, resumed_from_step

    def finish_attempt(
        self, job_id: str, outcome: str, reason: str, to: str, error: str | None = None
    ) -> JobRecord:
        """Close the running attempt and move the job on, in one transaction."""
        with self.db.write() as s:
            a = self._current_attempt(s, job_id)
            a.outcome, a.reason, a.ended_at = outcome, reason, _now()
            self._transition(s, job_id, to, reason, error)
        return self.get(job_id)

    @staticmethod
    def _current_attempt(s: Session, job_id: str) -> Attempt:
        a = s.scalars(
            select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number.desc()).limit(1)
        ).first()
        if a is None:
            raise InvalidTransition(f"job {job_id} has no attempt")
        return a

    def request_cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is flagged for its supervisor to stop."""
        with self.db.write() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if job.state == QUEUED:
                self._transition(s, job_id, CANCELLED, "cancelled by user")
            elif job.state == RUNNING:
                job.cancel_requested = True
        return self.get(job_id)

    def running(self) -> list[JobRecord]:
        return self.list(owner=None, states=[RUNNING], limit=10_000)

    # -- events ------------------------------------------------------------------------------------
    def append_event(self, job_id: str, event: jobs_pb2.JobEvent) -> int:
        with self.db.write() as s:
            return self._append(s, job_id, event)

    def _append(self, s: Session, job_id: str, event: jobs_pb2.JobEvent) -> int:
        seq = s.execute(
            update(Job).where(Job.id == job_id).values(last_seq=Job.last_seq + 1).returning(Job.last_seq)
        ).scalar_one()
        now = _now()
        event.job_id, event.seq = job_id, seq
        event.time.FromDatetime(now)
        kind = event.WhichOneof("payload") or "log"
        s.add(
            Event(
                job_id=job_id,
                seq=seq,
                time=now,
                kind=kind,
                payload=json_format.MessageToJson(event, indent=None),
            )
        )
        if kind in ("step", "eval", "artifact"):
            self._fold_into_job(s, job_id, event, kind)
        return seq

    @staticmethod
    def _fold_into_job(s: Session, job_id: str, event: jobs_pb2.JobEvent, kind: str) -> None:
        """Keep the job row's metrics and artifacts current so Get never has to replay events."""
        job = s.get(Job, job_id)
        assert job is not None
        if kind == "artifact":
            job.artifacts = {**(job.artifacts or {}), event.artifact.name: event.artifact.path}
            return
        m = dict(job.metrics or {})
        if kind == "step":
            st = event.step
            m.setdefault("first_loss", st.loss)
            m.update(
                final_loss=st.loss,
                steps=st.step,
                total_steps=st.total_steps,
                tokens_per_second=st.tokens_per_second,
            )
        else:
            m.setdefault("first_val_loss", event.eval.val_loss)
            m["final_val_loss"] = event.eval.val_loss
        job.metrics = m

    def events_after(self, job_id: str, after_seq: int, limit: int = 1000) -> list[jobs_pb2.JobEvent]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Event.payload)
                .where(Event.job_id == job_id, Event.seq > after_seq)
                .order_by(Event.seq)
                .limit(limit)
            )
            return [json_format.Parse(p, jobs_pb2.JobEvent()) for p in rows]
