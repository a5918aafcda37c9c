"""Host leases on running jobs, for several forged hosts sharing one queue (one PostgreSQL database).

A host holds a lease on every job it runs and renews it every few seconds. A host that dies stops renewing;
once its lease has run out another host puts the job back in the queue, and whichever host claims it next
resumes it from its last checkpoint in the (shared) job workspace. A host that finds it no longer holds a
job's lease, or that could not reach the database for a whole lease, stops its runner at once: by then
another host may be running the same job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from forged.store.jobs import JobStore

log = structlog.get_logger("forged.leases")


class LeaseKeeper:
    def __init__(
        self,
        store: JobStore,
        host: str,
        lease_seconds: float,
        interval: float,
        local_jobs: Callable[[], list[str]],
        on_lost: Callable[[str, str], None],
        on_cancel: Callable[[str], None],
        on_requeued: Callable[[], None],
    ) -> None:
        self.store = store
        self.host = host
        self.lease_seconds = lease_seconds
        self.interval = interval
        self._local_jobs = local_jobs
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._on_requeued = on_requeued
        self._renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("lease_tick_failed")

    def tick(self) -> None:
        """Renew this host's leases, stop what it lost, and requeue other hosts' expired jobs."""
        ids = self._local_jobs()
        try:
            held, cancel = self.store.renew_leases(self.host, ids, self.lease_seconds)
        except Exception as exc:
            silent = time.monotonic() - self._renewed_at
            if silent > self.lease_seconds and not self.store.db.is_sqlite:
                # Another host may already run these jobs; two runners in one workspace would corrupt it.
                # (A SQLite file has one host: there is nobody to take over, so its jobs keep running.)
                for job_id in ids:
                    self._on_lost(job_id, f"could not renew the lease for {silent:.0f}s: {exc}")
            raise
        self._renewed_at = time.monotonic()
        for job_id in ids:
            if job_id not in held:
                self._on_lost(job_id, "another host took the job over after this host's lease ran out")
        for job_id in cancel:
            self._on_cancel(job_id)
        requeued = self.store.requeue_expired(self.host)
        if requeued:
            log.warning("expired_leases_requeued", jobs=requeued)
            self._on_requeued()
