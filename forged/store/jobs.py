"""Jobs, their attempts and their event log. Every state change and its event commit together."""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from forge.v1 import jobs_pb2
from google.protobuf import json_format
from sqlalchemy import Connection, and_, func, insert, or_, select, update
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
# How long a host's claim on a running job holds without a renewal (its heartbeat renews it well before).
DEFAULT_LEASE_SECONDS = 30.0


class JobNotFound(LookupError):
    pass


class AmbiguousJobId(LookupError):
    pass


class InvalidTransition(RuntimeError):
    pass


class LeaseLost(RuntimeError):
    """The attempt is no longer the job's current one: another host took the job over."""


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
    gpu_indices: tuple[int, ...] = ()


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
    host: str = ""
    lease_expires_at: datetime | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    diagnosis: str = ""  # failed jobs: the likely cause and the fix
    diagnosis_brain: str = ""  # which brain wrote it: offline, gemini, local

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """The GPUs the job runs on now (its running attempt's); empty when not running or on the CPU."""
        current = self.attempts[-1] if self.attempts else None
        return current.gpu_indices if current is not None and current.outcome == "running" else ()


def new_job_id() -> str:
    return "j-" + secrets.token_hex(5)


def _now() -> datetime:
    return datetime.now(UTC)


def _db_now(s: Session | Connection) -> datetime:
    """The database server's clock on PostgreSQL, so hosts whose clocks disagree still agree on leases."""
    dialect = s.dialect if isinstance(s, Connection) else s.get_bind().dialect
    if dialect.name == "sqlite":
        return _now()
    return _utc(s.scalar(select(func.now())))


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones. Records are always aware.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _record(job: Any, attempts: list[Any]) -> JobRecord:
    """From ORM objects or Core rows alike: both expose the columns as attributes."""
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
        created_at=_utc(job.created_at),
        started_at=_utc(job.started_at),
        finished_at=_utc(job.finished_at),
        host=job.host,
        lease_expires_at=_utc(job.lease_expires_at),
        attempts=[
            AttemptRecord(
                a.number,
                _utc(a.started_at),
                _utc(a.ended_at),
                a.outcome,
                a.reason,
                a.resumed_from_step,
                a.host,
                a.pid,
                a.pid_started,
                tuple(a.gpu_indices or ()),
            )
            for a in sorted(attempts, key=lambda a: a.number)
        ],
        diagnosis=job.diagnosis,
        diagnosis_brain=job.diagnosis_brain,
    )


# Sorts before any real start time: a user who never started a job goes first in their round.
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)
_JOBS = Job.__table__
_ATTEMPTS = Attempt.__table__
_EVENTS = Event.__table__


class JobStore:
    """Jobs in the database. `publish` hears every event once it is committed (the event bus).

    The hot paths (submit, get, list) use SQLAlchemy Core: the ORM's unit of work costs several times
    more per call, and those calls are what every client and watcher waits on.
    """

    def __init__(
        self, db: Database, publish: Callable[[list[jobs_pb2.JobEvent]], None] | None = None
    ) -> None:
        self.db = db
        self.publish = publish

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self.db.write(after_commit=self._publish) as s:
            s.info["events"] = []
            yield s

    def _publish(self, s: Session) -> None:
        self._announce(s.info["events"])

    def _announce(self, events: list[jobs_pb2.JobEvent]) -> None:
        # Called once the transaction has committed: only now may watchers see its events.
        if self.publish is not None and events:
            self.publish(events)

    # -- creation and lookup -------------------------------------------------------------------------
    def create(
        self, owner: str, request_id: str, name: str, priority: int, spec: dict[str, Any], workspace_root: str
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; a repeated (owner, request_id) returns the first job instead.

        Insert first and look only on a conflict: retries are rare, and the unique index decides races.
        """
        job_id = new_job_id()
        now = _now()
        record = JobRecord(
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
            last_seq=1,
            cancel_requested=False,
            created_at=now,
            started_at=None,
            finished_at=None,
        )
        event = jobs_pb2.JobEvent(
            job_id=job_id,
            seq=1,
            state=jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_QUEUED, reason="submitted"),
        )
        event.time.FromDatetime(now)
        row = {k: v for k, v in vars(record).items() if k != "attempts"}
        row["project"] = str(spec.get("project") or "")
        try:
            with self.db.write_core(after_commit=lambda: self._announce([event])) as c:
                c.execute(insert(_JOBS).values(**row))
                c.execute(insert(_EVENTS).values(**_event_row(event, now)))
        except IntegrityError:
            # A retry of a submit that already landed (or raced it): return the first job.
            existing = self._by_request(owner, request_id)
            if existing is None:
                raise
            return existing, False
        return record, True

    def _by_request(self, owner: str, request_id: str) -> JobRecord | None:
        with self.db.connect() as s:
            row = s.execute(
                select(_JOBS).where(_JOBS.c.owner == owner, _JOBS.c.request_id == request_id)
            ).first()
            return None if row is None else self._load(s, row)

    def _load(self, s: Connection, job: Any) -> JobRecord:
        attempts = list(s.execute(select(_ATTEMPTS).where(_ATTEMPTS.c.job_id == job.id)))
        return _record(job, attempts)

    def get(self, job_id: str) -> JobRecord:
        with self.db.connect() as s:
            row = s.execute(select(_JOBS).where(_JOBS.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id)
            return self._load(s, row)

    def find(self, id_or_prefix: str, owner: str | None) -> JobRecord:
        """Exact id, or a unique prefix like docker's; `owner` None means any owner (admins)."""
        mine = (_JOBS.c.owner == owner) if owner is not None else and_(True)
        with self.db.connect() as s:
            exact = s.execute(select(_JOBS).where(_JOBS.c.id == id_or_prefix, mine)).first()
            if exact is not None:
                return self._load(s, exact)
            found = list(
                s.execute(
                    select(_JOBS).where(_JOBS.c.id.startswith(id_or_prefix, autoescape=True), mine).limit(2)
                )
            )
            if not found:
                raise JobNotFound(id_or_prefix)
            if len(found) > 1:
                raise AmbiguousJobId(id_or_prefix)
            return self._load(s, found[0])

    def list(
        self, owner: str | None, states: list[str] | None = None, limit: int = 100, project: str = ""
    ) -> list[JobRecord]:
        with self.db.connect() as s:
            q = select(_JOBS).order_by(_JOBS.c.created_at.desc()).limit(limit)
            if owner is not None:
                q = q.where(_JOBS.c.owner == owner)
            if states:
                q = q.where(_JOBS.c.state.in_(states))
            if project:
                q = q.where(_JOBS.c.project == project)
            jobs = list(s.execute(q))
            attempts: dict[str, list[Any]] = {j.id: [] for j in jobs}
            if jobs:
                for a in s.execute(select(_ATTEMPTS).where(_ATTEMPTS.c.job_id.in_(list(attempts)))):
                    attempts[a.job_id].append(a)
            return [_record(j, attempts[j.id]) for j in jobs]

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())  # type: ignore[arg-type]

    # The queue is fair between people: priority first; within a priority, users take turns in rounds (a
    # user's n-th queued job is in round n), and within a round the user who started a job least recently
    # (or never) goes first, then the one whose jobs have waited longest. So one person's twenty jobs do
    # not starve another's one, and a job's position predicts what the queue will do.

    def _last_starts(self, conn: Connection, owners: Iterable[str]) -> dict[str, datetime]:
        c = _JOBS.c
        owners = list(set(owners))
        if not owners:
            return {}
        rows = conn.execute(
            select(c.owner, func.max(c.started_at))
            .where(c.owner.in_(owners), c.started_at.is_not(None))
            .group_by(c.owner)
        )
        return {owner: _utc(at) for owner, at in rows}

    def queue_order(self) -> list[tuple[str, str]]:
        """(job id, owner) of every queued job, in the order they will run."""
        c = _JOBS.c
        with self.db.connect() as conn:
            rows = list(
                conn.execute(
                    select(c.id, c.owner, c.priority, c.created_at)
                    .where(c.state == QUEUED)
                    .order_by(c.priority.desc(), c.created_at, c.id)
                )
            )
            last = self._last_starts(conn, (r.owner for r in rows))
        turns: Counter[tuple[str, int]] = Counter()
        waiting_since: dict[tuple[str, int], datetime] = {}
        keyed = []
        for r in rows:
            group = (r.owner, r.priority)
            turns[group] += 1
            waiting_since.setdefault(group, _utc(r.created_at))
            user_key = (last.get(r.owner, _NEVER), waiting_since[group], r.owner)
            keyed.append(((-r.priority, turns[group], user_key), r.id, r.owner))
        keyed.sort(key=lambda k: k[0])
        return [(job_id, owner) for _key, job_id, owner in keyed]

    def queue_position(self, job: JobRecord) -> int:
        """1 for the next job to run; 0 when the job is not queued. A few indexed counts, no full scan of
        the queue, so it stays cheap with thousands of queued jobs."""
        if job.state != QUEUED:
            return 0
        c = _JOBS.c
        queued_at_p = and_(c.state == QUEUED, c.priority == job.priority)
        with self.db.connect() as conn:
            higher = conn.scalar(select(func.count()).where(c.state == QUEUED, c.priority > job.priority))
            mine_before = conn.scalar(
                select(func.count()).where(
                    queued_at_p,
                    c.owner == job.owner,
                    or_(c.created_at < job.created_at, and_(c.created_at == job.created_at, c.id < job.id)),
                )
            )
            users = {
                owner: (int(n), _utc(first))
                for owner, n, first in conn.execute(
                    select(c.owner, func.count(), func.min(c.created_at)).where(queued_at_p).group_by(c.owner)
                )
            }
            last = self._last_starts(conn, users)
        if job.owner not in users:  # it left the queue in between
            return 0
        turn = int(mine_before or 0) + 1

        def user_key(owner: str) -> tuple[datetime, datetime, str]:
            return (last.get(owner, _NEVER), users[owner][1], owner)

        mine = user_key(job.owner)
        others = sum(
            min(n, turn - 1) + (1 if n >= turn and user_key(owner) < mine else 0)
            for owner, (n, _first) in users.items()
            if owner != job.owner
        )
        return int(higher or 0) + (turn - 1) + others + 1

    # -- state machine -----------------------------------------------------------------------------
    def transition(self, job_id: str, to: str, reason: str, error: str | None = None) -> JobRecord:
        with self._write() as s:
            self._transition(s, job_id, to, reason, error)
        return self.get(job_id)

    def _transition(self, s: Session, job_id: str, to: str, reason: str, error: str | None = None) -> None:
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
        if to != RUNNING:
            job.host, job.lease_expires_at = "", None
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

    def claim(
        self,
        job_id: str,
        host: str,
        gpu_indices: tuple[int, ...] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> JobRecord | None:
        """queued -> running with a new attempt row on these GPUs (None: no GPU placement, the CPU) and
        `host`'s lease on it; None if someone else got there first."""
        with self._write() as s:
            # FOR UPDATE is a no-op on SQLite (forged's write lock serialises). On PostgreSQL SKIP LOCKED
            # passes over a job another host is claiming this instant instead of waiting to lose to it.
            job = s.scalars(
                select(Job).where(Job.id == job_id, Job.state == QUEUED).with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            number = (s.scalar(select(func.max(Attempt.number)).where(Attempt.job_id == job_id)) or 0) + 1
            s.add(
                Attempt(
                    job_id=job_id,
                    number=number,
                    started_at=_now(),
                    outcome="running",
                    host=host,
                    gpu_indices=None if gpu_indices is None else list(gpu_indices),
                )
            )
            s.flush()
            job.host, job.lease_expires_at = host, _db_now(s) + timedelta(seconds=lease_seconds)
            self._transition(s, job_id, RUNNING, f"attempt {number} started")
        return self.get(job_id)

    def set_attempt_process(
        self, job_id: str, pid: int, pid_started: float, resumed_from_step: int, attempt: int | None = None
    ) -> None:
        with self._write() as s:
            a = self._current_attempt(s, job_id, attempt)
            a.pid, a.pid_started, a.resumed_from_step = pid, pid_started, resumed_from_step

    def finish_attempt(
        self,
        job_id: str,
        outcome: str,
        reason: str,
        to: str,
        error: str | None = None,
        train: dict[str, Any] | None = None,
        diagnosis: tuple[str, str] | None = None,
        attempt: int | None = None,
        memory_bytes: int | None = None,
    ) -> JobRecord:
        """Close the running attempt and move the job on, in one transaction; `train` replaces the job's
        train spec for its next attempt (self-healing) and `memory_bytes` its GPU memory reservation;
        `diagnosis` is (text, brain) for a failed job. With
        `attempt`, only if that attempt is still the running one (LeaseLost otherwise): a host that lost its
        lease must not close someone else's."""
        with self._write() as s:
            a = self._current_attempt(s, job_id, attempt)
            a.outcome, a.reason, a.ended_at = outcome, reason, _now()
            if train is not None or diagnosis is not None or memory_bytes is not None:
                job = s.get(Job, job_id)
                assert job is not None
                if train is not None:
                    job.spec = {**job.spec, "train": train}
                if memory_bytes is not None:
                    # As protobuf JSON writes a uint64, like the rest of the stored JobSpec.
                    job.spec = {**job.spec, "memory_bytes": str(memory_bytes)}
                if diagnosis is not None:
                    job.diagnosis, job.diagnosis_brain = diagnosis
            self._transition(s, job_id, to, reason, error)
        return self.get(job_id)

    @staticmethod
    def _current_attempt(s: Session, job_id: str, expected: int | None = None) -> Attempt:
        a = s.scalars(
            select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number.desc()).limit(1)
        ).first()
        if a is None:
            raise InvalidTransition(f"job {job_id} has no attempt")
        if expected is not None and (a.number != expected or a.outcome != "running"):
            raise LeaseLost(f"attempt {expected} of job {job_id} is no longer running")
        return a

    def request_cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is flagged for its supervisor to stop."""
        with self._write() as s:
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

    # -- leases (several forged hosts on one database) ----------------------------------------------
    def renew_leases(
        self, host: str, job_ids: Iterable[str], lease_seconds: float
    ) -> tuple[set[str], set[str]]:
        """Extend `host`'s lease on those of `job_ids` it still holds. Returns (held, cancel requested):
        a job missing from `held` was taken over by another host and must stop here."""
        ids = list(job_ids)
        if not ids:
            return set(), set()
        c = _JOBS.c
        with self.db.write_core() as conn:
            until = _db_now(conn) + timedelta(seconds=lease_seconds)
            rows = list(
                conn.execute(
                    update(_JOBS)
                    .where(c.id.in_(ids), c.host == host, c.state == RUNNING)
                    .values(lease_expires_at=until)
                    .returning(c.id, c.cancel_requested)
                )
            )
        return {r.id for r in rows}, {r.id for r in rows if r.cancel_requested}

    def requeue_expired(self, host: str) -> list[str]:
        """Put back in the queue (or cancel, if asked) the running jobs of other hosts whose lease has run
        out: their host died or lost the database. A host never takes back its own jobs this way."""
        done: list[str] = []
        with self._write() as s:
            now = _db_now(s)
            expired = s.scalars(
                select(Job)
                .where(Job.state == RUNNING, Job.lease_expires_at < now, Job.host != host)
                .with_for_update(skip_locked=True)
            ).all()
            for job in expired:
                why = f"host {job.host} stopped renewing its lease"
                a = self._current_attempt(s, job.id)
                a.outcome, a.ended_at = ("cancelled" if job.cancel_requested else "interrupted"), _now()
                if job.cancel_requested:
                    a.reason = f"cancelled; {why}"
                    self._transition(s, job.id, CANCELLED, a.reason)
                else:
                    a.reason = f"{why}; resumes from the last checkpoint"
                    self._transition(s, job.id, QUEUED, a.reason)
                done.append(job.id)
        return done

    # -- events ------------------------------------------------------------------------------------
    def append_event(self, job_id: str, event: jobs_pb2.JobEvent) -> int:
        with self._write() as s:
            return self._append(s, job_id, event)

    def _append(self, s: Session, job_id: str, event: jobs_pb2.JobEvent) -> int:
        seq = s.execute(
            update(Job).where(Job.id == job_id).values(last_seq=Job.last_seq + 1).returning(Job.last_seq)
        ).scalar_one()
        now = _now()
        event.job_id, event.seq = job_id, seq
        event.time.FromDatetime(now)
        kind = event.WhichOneof("payload") or "log"
        s.execute(insert(_EVENTS).values(**_event_row(event, now)))
        s.info["events"].append(event)
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
        with self.db.connect() as c:
            rows = c.scalars(
                select(_EVENTS.c.payload)
                .where(_EVENTS.c.job_id == job_id, _EVENTS.c.seq > after_seq)
                .order_by(_EVENTS.c.seq)
                .limit(limit)
            )
            return [json_format.Parse(p, jobs_pb2.JobEvent()) for p in rows]


def _event_row(event: jobs_pb2.JobEvent, now: datetime) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "seq": event.seq,
        "time": now,
        "kind": event.WhichOneof("payload") or "log",
        "payload": json_format.MessageToJson(event, indent=None),
    }
