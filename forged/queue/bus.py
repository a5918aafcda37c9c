"""Fan-out of committed job events to watchers, from memory.

The database is the record: every event is committed there first. The bus keeps the newest events of
recent jobs so that fifty watchers of one job cost fifty sends, not fifty queries; a watcher that asks
for something older than the bus still holds (a reconnect after a restart, a slow reader) is told to read
the database instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from forge.v1 import jobs_pb2

TAIL_EVENTS = 512
TAIL_JOBS = 256
_TERMINAL = frozenset({jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED})


@dataclass
class _Tail:
    cond: threading.Condition
    events: deque[jobs_pb2.JobEvent] = field(default_factory=lambda: deque(maxlen=TAIL_EVENTS))
    version: int = 0
    terminal: bool = False
    waiters: int = 0


@dataclass(frozen=True)
class Snapshot:
    """What the bus knows of a job after some seq. `events` is None when the bus cannot say."""

    version: int
    events: list[jobs_pb2.JobEvent] | None
    terminal: bool


class EventBus:
    def __init__(self, tail_events: int = TAIL_EVENTS, tail_jobs: int = TAIL_JOBS) -> None:
        self._lock = threading.Lock()
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._tail_events = tail_events
        self._tail_jobs = tail_jobs
        self._closed = False

    def _tail(self, job_id: str) -> _Tail:
        tail = self._tails.get(job_id)
        if tail is None:
            tail = _Tail(threading.Condition(self._lock), deque(maxlen=self._tail_events))
            self._tails[job_id] = tail
            if len(self._tails) > self._tail_jobs:
                self._evict()
        else:
            self._tails.move_to_end(job_id)
        return tail

    def _evict(self) -> None:
        # Least recently used first, never a tail someone is waiting on (its version must keep counting).
        # A watcher that finds its job's tail gone reads the database instead, so eviction loses nothing.
        for job_id in list(self._tails):
            if len(self._tails) <= self._tail_jobs:
                return
            if not self._tails[job_id].waiters:
                del self._tails[job_id]

    def publish(self, events: list[jobs_pb2.JobEvent]) -> None:
        """Called with events in seq order, after they are committed."""
        with self._lock:
            touched = []
            for ev in events:
                tail = self._tail(ev.job_id)
                if tail.events and ev.seq != tail.events[-1].seq + 1:
                    # A gap or a late arrival (writers on a shared database publish in any order): the
                    # tail must be one unbroken run, so start it again and let the database fill holes.
                    late = ev.seq <= tail.events[-1].seq
                    tail.events.clear()
                    if late:
                        tail.version += 1
                        touched.append(tail)
                        continue
                tail.events.append(ev)
                if ev.WhichOneof("payload") == "state" and ev.state.state in _TERMINAL:
                    tail.terminal = True
                tail.version += 1
                touched.append(tail)
            for tail in touched:
                tail.cond.notify_all()

    def snapshot(self, job_id: str, after_seq: int) -> Snapshot:
        with self._lock:
            tail = self._tail(job_id)
            covered = bool(tail.events) and tail.events[0].seq <= after_seq + 1
            if not covered:
                return Snapshot(tail.version, None, tail.terminal)
            return Snapshot(tail.version, [e for e in tail.events if e.seq > after_seq], tail.terminal)

    def wait(self, job_id: str, seen_version: int, timeout: float) -> int:
        """Block until job_id changes after seen_version (or timeout / close); returns the new version."""
        with self._lock:
            tail = self._tail(job_id)
            tail.waiters += 1
            try:
                tail.cond.wait_for(lambda: self._closed or tail.version != seen_version, timeout)
            finally:
                tail.waiters -= 1
            return tail.version

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for tail in self._tails.values():
                tail.cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
