"""The queue: starts queued jobs as capacity frees up, recovers unfinished jobs, drains on shutdown.

On a machine with NVIDIA GPUs every training job is placed on GPUs whose free memory fits its estimate
(forged/queue/placement.py), at most `slots_per_gpu` jobs to a GPU, so jobs on different GPUs run at once.
A job that fits nowhere yet waits, and the jobs behind it that do fit start, but not on the GPUs reserved
for the first such job in line: it waits on the GPUs nearest to having room for it, and later jobs take
those only in memory that stays free beside it (placement.Reservation). Without that, small jobs would keep
refilling a GPU as it frees up and a large job would wait forever. The reservation is made at once rather
than after some wait: a bound would only let more small jobs in ahead of it, and jobs carry no run-time
estimate by which "would not delay it" could be judged more finely.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import structlog

from forged.brain.diagnosis import JobDiagnoser
from forged.executors.base import Executor
from forged.executors.local import stop_stale_process
from forged.hardware.nvml import GpuInfo, GpuMonitor
from forged.queue.leases import LeaseKeeper
from forged.queue.placement import (
    Decision,
    Need,
    Placed,
    Reservation,
    gpu_list,
    never_fits,
    place,
    reserve,
)
from forged.queue.supervisor import Supervisor
from forged.store import jobs as J
from forged.store.blobs import BlobStore
from forged.store.jobs import JobStore

log = structlog.get_logger("forged.scheduler")

# Queued jobs looked at per pass when GPUs are short: enough to fill free GPUs from behind a job that waits
# for a big one, without reading thousands of specs every second.
_MAX_UNPLACED_SCAN = 50


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        executor: Executor,
        max_running: int | None = 1,
        stale_grace: float = 60.0,
        max_per_user: int = 0,
        diagnoser: JobDiagnoser | None = None,
        gpus: GpuMonitor | None = None,
        slots_per_gpu: int = 1,
        host: str | None = None,
        lease_seconds: float = J.DEFAULT_LEASE_SECONDS,
    ) -> None:
        """`max_running` None: as many jobs as the GPUs have slots (one on a machine without GPUs)."""
        self.diagnoser = diagnoser or JobDiagnoser()
        self.store = store
        self.blobs = blobs
        self.executor = executor
        self._max_running = max_running
        self.max_per_user = max_per_user
        self.gpus = gpus
        self.slots_per_gpu = slots_per_gpu
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
        # Made by each pass over the queue (the scheduler thread's), read by wait_reason.
        self._reservation: Reservation | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.leases.start()

    @property
    def max_running(self) -> int:
        if self._max_running is not None:
            return self._max_running
        return max(1, len(self._gpus()) * self.slots_per_gpu)

    def _gpus(self) -> list[GpuInfo]:
        return self.gpus.get().gpus if self.gpus is not None else []

    def _placed(self) -> list[Placed]:
        with self._lock:
            return [
                Placed(job_id, s.gpu_indices, Need.of(s.job.spec).memory_bytes)
                for job_id, s in self._active.items()
                if s.gpu_indices and s.thread.is_alive()
            ]

    def _decide(
        self, job_id: str, spec: Mapping[str, Any], gpus: list[GpuInfo], reservation: Reservation | None
    ) -> Decision:
        if "export" in spec:
            # Merging and converting run on the CPU: an export never holds a GPU another job could train on.
            return Decision(gpu_indices=())
        placed = self._placed()
        if reservation is not None and reservation.job_id != job_id:
            placed.append(reservation.hold())  # as if it ran already: whoever starts now fits beside it
        return place(Need.of(spec), gpus, placed, self.slots_per_gpu)

    def _reserve(self, job_id: str, spec: Mapping[str, Any], gpus: list[GpuInfo]) -> Reservation | None:
        need = Need.of(spec)
        held = reserve(need, gpus, self._placed())
        return Reservation(job_id, held, need.memory_bytes) if held else None

    def _why_unplaced(
        self,
        job_id: str,
        spec: Mapping[str, Any],
        gpus: list[GpuInfo],
        decision: Decision,
        reservation: Reservation | None,
    ) -> str:
        if reservation is None:
            return decision.wait_reason
        held = gpu_list(reservation.gpu_indices)
        if reservation.job_id == job_id:
            return f"{decision.wait_reason}; reserved {held} for it"
        if self._decide(job_id, spec, gpus, None).placed:
            return f"reserved {held} for job {reservation.job_id}, which is ahead and waits for room there"
        return decision.wait_reason

    def unplaceable(self, spec: Mapping[str, Any]) -> str:
        """Why this machine can never run a job with this spec, even idle; empty if it can (or has no GPU)."""
        gpus = self._gpus()
        if not gpus or "export" in spec:
            return ""
        return never_fits(Need.of(spec), gpus)

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
        gpus = self._gpus()
        if gpus:
            reservation = self._reservation
            decision = self._decide(job.id, job.spec, gpus, reservation)
            if not decision.placed:
                return f"{ahead}; {self._why_unplaced(job.id, job.spec, gpus, decision, reservation)}"
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
            self._reservation = None  # nothing starts until a slot frees, and then the head goes first
            return
        running = self._running_by_owner()
        gpus = self._gpus()
        unplaced = 0
        reservation: Reservation | None = None
        for job_id, owner in self.store.queue_order():
            if free <= 0 or self._stopping.is_set() or unplaced >= _MAX_UNPLACED_SCAN:
                break
            if self.max_per_user and running[owner] >= self.max_per_user:
                continue  # this user waits; the next user's job may start
            if job_id in busy:
                continue  # taken back from this host, whose abandoned runner is still being stopped
            placement: tuple[int, ...] | None = None  # no GPUs: the CPU, environment untouched
            if gpus:
                spec = self.store.get(job_id).spec
                decision = self._decide(job_id, spec, gpus, reservation)
                if not decision.placed:
                    unplaced += 1
                    if reservation is None:
                        reservation = self._reserve(job_id, spec, gpus)
                    continue  # it waits for room; a smaller job behind it may fit beside the reservation
                placement = decision.gpu_indices
            job = self.store.claim(job_id, self.host, gpu_indices=placement, lease_seconds=self.lease_seconds)
            if job is None:
                continue
            sup = Supervisor(
                job,
                self.store,
                self.blobs,
                self.executor,
                on_done=self.poke,
                diagnoser=self.diagnoser,
                gpu_indices=placement,
            )
            with self._lock:
                # Started under the lock: others treat a registered supervisor's thread as joinable.
                self._active[job_id] = sup
                sup.thread.start()
            free -= 1
            running[owner] += 1
            log.info("job_started", job=job_id, owner=job.owner, gpus=placement)
        if reservation != self._reservation and reservation is not None:
            log.info("gpus_reserved", job=reservation.job_id, gpus=reservation.gpu_indices)
        self._reservation = reservation

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
