"""The event bus's memory: bounded, and never at the expense of a watcher (forged/queue/bus.py)."""

from __future__ import annotations

import threading
import time

from forge.v1 import jobs_pb2

from forged.queue.bus import EventBus


def log_event(job_id: str, seq: int) -> jobs_pb2.JobEvent:
    return jobs_pb2.JobEvent(job_id=job_id, seq=seq, log=jobs_pb2.LogEvent(message=f"{job_id} {seq}"))


def test_events_come_from_memory_until_the_job_is_evicted_then_the_database_is_asked() -> None:
    bus = EventBus(tail_jobs=2)
    bus.publish([log_event("a", 1), log_event("a", 2)])
    assert [e.seq for e in bus.snapshot("a", 0).events or []] == [1, 2]
    for other in ("b", "c", "d"):  # jobs merely looked at count too: memory stays bounded
        bus.snapshot(other, 0)
    assert bus.snapshot("a", 0).events is None, "evicted: the watcher must read the database"


def test_a_job_someone_waits_on_is_never_evicted_and_the_waiter_wakes_on_its_event() -> None:
    bus = EventBus(tail_jobs=1)
    bus.publish([log_event("watched", 1)])
    version = bus.snapshot("watched", 1).version
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(bus.wait("watched", version, timeout=30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while bus._tails["watched"].waiters == 0 and time.monotonic() < deadline:  # until it really waits
        time.sleep(0.01)
    for other in ("x", "y", "z"):
        bus.snapshot(other, 0)  # pressure on the bound while someone waits
    started = time.monotonic()
    bus.publish([log_event("watched", 2)])
    waiter.join(10)
    assert woke and woke[0] != version and time.monotonic() - started < 5, "woken by the event"
    assert [e.seq for e in bus.snapshot("watched", 1).events or []] == [2]
