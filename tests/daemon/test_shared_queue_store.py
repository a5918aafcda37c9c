"""The shared queue's database side on a real PostgreSQL: migrations, SKIP LOCKED claims, host leases."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

from forged.queue.leases import LeaseKeeper
from forged.store import jobs as J
from forged.store.db import MIGRATIONS, Database, sqlite_url
from forged.store.jobs import JobStore, LeaseLost

SPEC = {"train": {"model": "tiny"}}


def _alembic(db: Database, action: str, target: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


def _job_columns(db: Database) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns("jobs")}


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrations_go_up_down_and_up_again(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "f.db")
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    try:
        db.migrate()
        assert {"host", "lease_expires_at"} <= _job_columns(db)
        store = JobStore(db)
        job, _ = store.create("alice", "r1", "kept", 0, SPEC, "/w")
        _alembic(db, "downgrade", "0002")
        assert not {"host", "lease_expires_at"} & _job_columns(db)
        db.migrate()
        # Jobs queued before the upgrade come back with no host and no lease.
        again = store.get(job.id)
        assert (again.state, again.host, again.lease_expires_at) == (J.QUEUED, "", None)
        _alembic(db, "downgrade", "base")
        assert "jobs" not in inspect(db.engine).get_table_names()
        db.migrate()
    finally:
        db.dispose()


@pytest.fixture
def hosts(postgres_url: str):  # type: ignore[no-untyped-def]
    """Two forged hosts' stores: separate engines (connection pools) on one database."""
    dbs = [Database(postgres_url), Database(postgres_url)]
    dbs[0].migrate()
    yield JobStore(dbs[0]), JobStore(dbs[1])
    for db in dbs:
        db.dispose()


def test_a_claim_skips_a_job_another_host_is_claiming_instead_of_waiting(hosts) -> None:  # type: ignore[no-untyped-def]
    a, b = hosts
    job, _ = a.create("alice", "r1", "one", 0, SPEC, "/w")
    with a.db.engine.connect() as other:
        # Host A is mid-claim: it holds the row lock and has not committed yet.
        other.execute(select(J.Job).where(J.Job.id == job.id).with_for_update())
        results: list[J.JobRecord | None] = []
        claimer = threading.Thread(target=lambda: results.append(b.claim(job.id, "host-b")))
        claimer.start()
        claimer.join(5)
        returned_at_once = not claimer.is_alive()
        other.rollback()
        claimer.join(10)
    assert returned_at_once, "the claim waited for the other host's lock instead of skipping the job"
    assert results == [None]
    claimed = b.claim(job.id, "host-b")
    assert claimed is not None and (claimed.state, claimed.host) == (J.RUNNING, "host-b")
    assert claimed.lease_expires_at is not None
    assert a.claim(job.id, "host-a") is None, "a running job cannot be claimed again"


def test_hosts_racing_for_the_queue_claim_each_job_exactly_once(hosts) -> None:  # type: ignore[no-untyped-def]
    a, b = hosts
    ids = [a.create("alice", f"r{i}", f"job {i}", 0, SPEC, "/w")[0].id for i in range(24)]
    won: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(store: JobStore, host: str) -> None:
        # Every worker walks the whole queue in the same order, as every scheduler does: maximal contention.
        for job_id, _owner in store.queue_order():
            if store.claim(job_id, host) is not None:
                with lock:
                    won.append((job_id, host))

    threads = [
        threading.Thread(target=worker, args=(store, f"{host}-{n}"))
        for store, host in ((a, "a"), (b, "b"))
        for n in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _h in won) == sorted(ids), "every job claimed, none twice"
    assert {h.split("-")[0] for _j, h in won} == {"a", "b"}, "both hosts got work"
    for job_id in ids:
        job = a.get(job_id)
        assert job.state == J.RUNNING and len(job.attempts) == 1
        assert job.attempts[0].host == job.host == dict(won)[job_id]


def test_an_expired_lease_is_taken_back_by_another_host_and_only_then(hosts) -> None:  # type: ignore[no-untyped-def]
    a, b = hosts
    job, _ = a.create("alice", "r1", "one", 0, SPEC, "/w")
    assert a.claim(job.id, "host-a", lease_seconds=1.0) is not None

    assert b.requeue_expired("host-b") == [], "a live lease is left alone"
    time.sleep(0.6)
    assert a.renew_leases("host-a", [job.id], 1.0) == ({job.id}, set())
    time.sleep(0.6)
    assert b.requeue_expired("host-b") == [], "the renewal pushed the expiry out"
    time.sleep(0.6)
    assert a.requeue_expired("host-a") == [], "a host never takes back its own jobs"

    assert b.requeue_expired("host-b") == [job.id]
    requeued = b.get(job.id)
    assert (requeued.state, requeued.host, requeued.lease_expires_at) == (J.QUEUED, "", None)
    assert requeued.attempts[0].outcome == "interrupted"
    assert requeued.attempts[0].reason.startswith("host host-a stopped renewing its lease")
    # Host A comes back: it no longer holds the job and may not close the attempt it started.
    assert a.renew_leases("host-a", [job.id], 1.0) == (set(), set())
    with pytest.raises(LeaseLost):
        a.finish_attempt(job.id, "succeeded", "training finished", J.SUCCEEDED, attempt=1)

    taken = b.claim(job.id, "host-b", lease_seconds=30.0)
    assert taken is not None and [x.host for x in taken.attempts] == ["host-a", "host-b"]
    # A cancel asked for on host A reaches host B through B's next renewal.
    a.request_cancel(job.id)
    assert b.renew_leases("host-b", [job.id], 30.0) == ({job.id}, {job.id})
    assert Counter(x.outcome for x in b.get(job.id).attempts) == {"interrupted": 1, "running": 1}


def test_the_heartbeat_stops_what_its_host_lost_and_passes_on_cancels(hosts) -> None:  # type: ignore[no-untyped-def]
    a, b = hosts
    slow, busy = (a.create("alice", f"r{i}", "one", 0, SPEC, "/w")[0].id for i in range(2))
    a.claim(slow, "host-a", lease_seconds=0.5)
    a.claim(busy, "host-a", lease_seconds=30)
    heard: dict[str, list[str]] = {"lost": [], "cancel": [], "requeued": []}

    def keeper(store: JobStore, name: str, local: list[str]) -> LeaseKeeper:
        return LeaseKeeper(
            store,
            name,
            lease_seconds=0.5,
            interval=0.1,
            local_jobs=lambda: local,
            on_lost=lambda job_id, _why: heard["lost"].append(job_id),
            on_cancel=heard["cancel"].append,
            on_requeued=lambda: heard["requeued"].append(name),
        )

    time.sleep(0.7)  # host A stalled past its lease on `slow`; `busy` still has most of its 30 s
    keeper(b, "host-b", []).tick()
    assert heard["requeued"] == ["host-b"] and b.get(slow).state == J.QUEUED
    b.request_cancel(busy)  # asked on host B; host A runs it
    keeper(a, "host-a", [slow, busy]).tick()
    assert heard["lost"] == [slow], "host A stops the job it no longer holds, and only that one"
    assert heard["cancel"] == [busy], "host A hears the cancel asked for on host B"
    assert a.get(busy).host == "host-a"
