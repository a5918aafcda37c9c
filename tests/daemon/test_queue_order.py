"""The fair queue's order, and that every job's reported position agrees with it (a real SQLite file)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from forged.store.db import Database, sqlite_url
from forged.store.jobs import JobStore


def make_store(tmp_path: Path) -> JobStore:
    db = Database(sqlite_url(tmp_path / "forged.db"))
    db.migrate()
    return JobStore(db)


def submit(store: JobStore, owner: str, priority: int = 0) -> str:
    job, _ = store.create(owner, str(uuid.uuid4()), "job", priority, {}, "/tmp/jobs")
    return job.id


def test_users_take_turns_and_the_one_who_started_least_recently_goes_first(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    a1 = submit(store, "alice")
    store.claim(a1, "host")  # alice has started a job; bob never has
    a2, a3, a4 = (submit(store, "alice") for _ in range(3))
    b1, b2 = submit(store, "bob"), submit(store, "bob")
    urgent = submit(store, "carol", priority=5)

    order = [job_id for job_id, _ in store.queue_order()]

    assert order == [urgent, b1, a2, b2, a3, a4]


def test_every_position_matches_the_order(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    rng = random.Random(3)
    users = ["ann", "ben", "cat", "dan"]
    for i in range(60):
        job_id = submit(store, rng.choice(users), priority=rng.choice([0, 0, 0, 1]))
        if i % 9 == 0:
            store.claim(job_id, "host")  # some users have started jobs, at different times

    order = store.queue_order()
    assert len(order) == 60 - 7
    for index, (job_id, _owner) in enumerate(order):
        assert store.queue_position(store.get(job_id)) == index + 1, job_id
