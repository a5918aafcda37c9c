"""The queue: starts queued jobs as capacity frees up, recovers unfinished jobs, drains on shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import structlog

from forged.executors.base import Executor
from forged.executors.local import stop_stale_process
from forged.queue.leases import LeaseKeeper
from forged.queue.supervisor import Supervisor
from forged.store import jobs as J
from forged.store.blobs import BlobStore
from forged.store.jobs import JobStore

log = structlog.get_logger("forged.scheduler")


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        executor: Executor,
        max_running: int = 1,
        stale_grace: float = 60.0,
        max_per_user: int = 0,
        host: str | None = None,
        lease_seconds: float = J.DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.executor = executor
        self.max_running = max_running
        self.max_per_user = max_per_user
        self.stale_grace = stale_grace
        self.host = host or socket.gethostname()
        self.lease_seconds = lease_seconds
        self.leases = LeaseKeeper(
            store,
            self.host,
            lease_seconds,
            # Five renewals per lease: a host must miss several in a row before another takes its jobs.
            interval=lease_seconds / 5,
            local_jobs=self.active_ids,
            on_lost=self._lost,
            on_cancel=self.cancel,
            on_requeued=self.poke,
        )
        self._active: dict[str, Supervisor] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.leases.start()

    def poke(self) -> None:
        self._wake.set()

    def recover(self) -> int:
        """Put every job a previous forged left running back in the queue; returns how many."""
        recovered = 0
        shared = not self.store.db.is_sqlite
        for job in self.store.running():
            if shared and job.host not in (self.host, ""):
                continue  # another host's job: it renews its lease, or another host requeues it once expired
            current = job.attempts[-1] if job.attempts else None
            # Before host ids, attempts recorded the bare hostname; SQLite means a single host anyway.
            legacy = not shared and current is not None and current.host == socket.gethostname()
            on_this_host = current is not None and current.pid and (current.host == self.host or legacy)
            if on_this_host and stop_stale_process(current.pid, current.pid_started, self.stale_grace):
                log.info("stale_runner_stopped", job=job.id, pid=current.pid)
            if job.cancel_requested:
                self.store.finish_attempt(job.id, "cancelled", "cancelled while forged was down", J.CANCELLED)
            else:
                self.store.finish_attempt(
                    job.id, "interrupted", "forged restarted; resumes from the last checkpoint", J.QUEUED
                )
            recovered += 1
        if recovered:
            log.info("jobs_recovered", count=recovered)
        return recovered

    def cancel(self, job_id: str) -> None:
        with self._lock:
            sup = self._active.get(job_id)
        if sup is not None:
            sup.cancel()
        self.poke()

    def wait_idle(self, job_id: str, timeout: float) -> None:
        with self._lock:
            sup = self._active.get(job_id)
        if sup is not None:
            sup.thread.join(timeout)
            return
        # Maybe running on another host of a shared queue: it sees the request at its next lease renewal.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.store.get(job_id).state == J.RUNNING:
            time.sleep(0.2)

    def active_ids(self) -> list[str]:
        with self._lock:
            return [job_id for job_id, sup in self._active.items() if sup.thread.is_alive()]

    def _lost(self, job_id: str, why: str) -> None:
        with self._lock:
            sup = self._active.get(job_id)
        if sup is not None:
            sup.abandon(why)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._fill()
            except Exception:
                log.exception("scheduler_error")

    def _running_by_owner(self) -> Counter[str]:
        with self._lock:
            return Counter(s.job.owner for s in self._active.values() if s.thread.is_alive())

    def wait_reason(self, job: J.JobRecord, position: int) -> str:
        """Why a queued job has not started, in words for its owner."""
        if job.state != J.QUEUED:
            return ""
        if self.max_running <= 0:
            return "this forged runs no jobs (--max-jobs 0); it only queues them"
        running = self._running_by_owner()
        mine = running[job.owner]
        if self.max_per_user and mine >= self.max_per_user:
            return f"{job.owner} already runs {mine} job{'s' if mine != 1 else ''}, the per-user limit"
        ahead = f"{position - 1} job{'s' if position != 2 else ''} ahead" if position > 1 else "next in line"
        busy = sum(running.values())
        if busy >= self.max_running:
            return f"{ahead}; all {self.max_running} slot{'s' if self.max_running != 1 else ''} busy"
        return ahead

    def _fill(self) -> None:
        with self._lock:
            for job_id in [j for j, s in self._active.items() if not s.thread.is_alive()]:
                del self._active[job_id]
            free = self.max_running - len(self._active)
            busy = set(self._active)
        if free <= 0:
            return
        running = self._running_by_owner()
        for job_id, owner in self.store.queue_order():
            if free <= 0 or self._stopping.is_set():
                break
            if self.max_per_user and running[owner] >= self.max_per_user:
                continue  # this user waits; the next user's job may start
            if job_id in busy:
                continue  # taken back from this host, whose abandoned runner is still being stopped
            job = self.store.claim(job_id, self.host, self.lease_seconds)
            if job is None:
                continue
            sup = Supervisor(job, self.store, self.blobs, self.executor, on_done=self.poke)
            with self._lock:
                # Started under the lock: others treat a registered supervisor's thread as joinable.
                self._active[job_id] = sup
                sup.thread.start()
            free -= 1
            running[owner] += 1
            log.info("job_started", job=job_id, owner=job.owner)

    def stop(self, grace: float) -> None:
        """Checkpoint running jobs and put them back in the queue, then stop scheduling."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            active = list(self._active.values())
        for sup in active:
            sup.preempt()
        for sup in active:
            sup.thread.join(grace)
            if sup.thread.is_alive():
                log.warning("runner_did_not_stop_in_time", job=sup.job.id)
                sup.kill()
                sup.thread.join(10)
        # Renewed until the runners have stopped: a checkpoint on SIGTERM can take longer than a lease.
        self.leases.stop()
        self._thread.join(5)
