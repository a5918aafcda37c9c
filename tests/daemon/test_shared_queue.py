"""Two real forged processes on one real PostgreSQL queue, sharing one directory of files and workspaces."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from forge.v1 import jobs_pb2 as S
from harness import EXAMPLE_CSV, TERMINAL, Forged, forge_env
from sqlalchemy import create_engine, text

LEASE = "2"  # seconds: renewed every 0.4 s, so a dead host's job is free again within about 2.5 s


@contextlib.contextmanager
def host(tmp_path: Path, name: str, db: str, *extra: str) -> Iterator[Forged]:
    d = Forged(
        tmp_path / name,
        *("--db", db, "--shared-dir", str(tmp_path / "shared"), "--host-id", name, "--lease-seconds", LEASE),
        *extra,
    ).start()
    try:
        yield d
    finally:
        d.cleanup()


def _attempt_hosts(db: str) -> dict[str, list[str]]:
    """Which host ran each attempt of each job, straight from the database (the API does not say)."""
    engine = create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT job_id, host FROM attempts ORDER BY job_id, number"))
            hosts: dict[str, list[str]] = {}
            for job_id, h in rows:
                hosts.setdefault(job_id, []).append(h)
            return hosts
    finally:
        engine.dispose()


def _watch(d: Forged, job_id: str, out: dict[str, list[S.JobEvent]]) -> threading.Thread:
    def follow() -> None:
        out[job_id] = d.events(job_id, follow=True, timeout=240)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    return t


def test_two_hosts_share_the_queue_and_never_run_a_job_twice(tmp_path: Path, postgres_url: str) -> None:
    with host(tmp_path, "host-a", postgres_url) as a, host(tmp_path, "host-b", postgres_url) as b:
        spec = a.train_spec(EXAMPLE_CSV, max_steps=1, val_data="", checkpoint_every=0)
        jobs = [a.submit(spec) for _ in range(3)]  # each host runs one at a time: both must take some
        # Host B follows every job, including those host A runs: it must see their events too.
        seen_on_b: dict[str, list[S.JobEvent]] = {}
        watchers = [_watch(b, j.id, seen_on_b) for j in jobs]
        for w in watchers:
            w.join(240)
        finals = [a.get(j.id) for j in jobs]

    for job in finals:
        assert job.state == S.JOB_STATE_SUCCEEDED, job.error
        assert [x.outcome for x in job.attempts] == ["succeeded"], "each job ran exactly once"
        events = seen_on_b[job.id]
        assert [e.seq for e in events] == list(range(1, job.last_seq + 1)), "host B saw every event once"
        running = [
            e for e in events if e.WhichOneof("payload") == "state" and e.state.state == S.JOB_STATE_RUNNING
        ]
        assert len(running) == 1
    ran_on = _attempt_hosts(postgres_url)
    assert {h for j in finals for h in ran_on[j.id]} == {"host-a", "host-b"}, "both hosts took jobs"


def test_a_killed_hosts_job_is_taken_over_after_its_lease_and_finishes_once(
    tmp_path: Path, postgres_url: str
) -> None:
    total = 10
    with host(tmp_path, "host-a", postgres_url) as a:
        job = a.submit(a.train_spec(EXAMPLE_CSV, max_steps=total, checkpoint_every=2, val_data=""))
        a.wait_until(job.id, lambda j: j.state == S.JOB_STATE_RUNNING)
        assert a.get(job.id).host == "host-a"
        with host(tmp_path, "host-b", postgres_url) as b:
            # Host B sees A renewing: it leaves the job alone however long A trains.
            live = b.wait_until(job.id, lambda j: j.metrics.steps >= 4)
            assert (live.host, len(live.attempts)) == ("host-a", 1)
            a.kill9()
            killed_at = time.monotonic()
            b.wait_until(job.id, lambda j: j.host == "host-b", timeout=60)
            assert time.monotonic() - killed_at < 15
            events = b.events(job.id, follow=True, timeout=240)
            final = b.get(job.id)

    assert final.state == S.JOB_STATE_SUCCEEDED, final.error
    assert [x.outcome for x in final.attempts] == ["interrupted", "succeeded"]
    assert final.attempts[0].reason.startswith("host host-a stopped renewing its lease")
    # Step 4's checkpoint was complete before A died (and A's runner saves another as it goes down).
    assert final.attempts[1].resumed_from_step >= 4, "host B resumed from A's checkpoint in the shared dir"
    assert final.metrics.steps == total
    assert [e.seq for e in events] == list(range(1, final.last_seq + 1)), "A's events and B's, each once"
    done = [e for e in events if e.WhichOneof("payload") == "state" and e.state.state in TERMINAL]
    assert [e.state.state for e in done] == [S.JOB_STATE_SUCCEEDED], "it finished exactly once"
    assert _attempt_hosts(postgres_url)[job.id] == ["host-a", "host-b"]


def test_a_database_forged_cannot_reach_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before forged dials it: nothing listens there
    db = f"postgresql://forge:hunter2@127.0.0.1:{port}/forge"
    out = subprocess.run(
        [sys.executable, "-m", "forged", "--state-dir", str(tmp_path / "s"), "--db", db],
        env=forge_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"forged: cannot open the database postgresql://forge:***@127.0.0.1:{port}/forge: "
    )
    assert len(out.stderr.strip().splitlines()) == 1 and "hunter2" not in out.stderr
