"""Supervises one attempt of one job: workspace, model, runner process, events, outcome."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from forge.train_fields import RUNNER_FIELDS
from forge.v1 import jobs_pb2
from google.protobuf import json_format

from forged.brain.diagnosis import LOG_LINES_SENT, JobDiagnoser
from forged.brain.planner import estimate_memory
from forged.executors.base import (
    EXIT_BAD_INPUT,
    EXIT_PREEMPTED,
    Executor,
    ExecutorError,
    RunHandle,
    RunRequest,
)
from forged.export import stage as export_stage
from forged.models.resolve import ModelError, resolve
from forged.queue import remedy
from forged.queue.placement import Need, gib
from forged.store import jobs as J
from forged.store.blobs import BlobStore
from forged.store.jobs import JobRecord, JobStore

log = structlog.get_logger("forged.supervisor")

_EVENT_KEYS = frozenset(f.name for f in jobs_pb2.JobEvent.DESCRIPTOR.oneofs_by_name["payload"].fields)


def parse_runner_line(line: str) -> jobs_pb2.JobEvent:
    """A protocol line becomes its event; anything else the runner prints becomes a log event."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
            if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in _EVENT_KEYS:
                return json_format.ParseDict(obj, jobs_pb2.JobEvent(), ignore_unknown_fields=True)
        except (ValueError, json_format.ParseError):
            pass
    return jobs_pb2.JobEvent(log=jobs_pb2.LogEvent(level="info", message=line, source="runner"))


def latest_checkpoint_step(checkpoints: Path) -> int:
    steps = [
        int(p.name.split("-", 1)[1])
        for p in checkpoints.glob("step-*")
        if (p / "COMPLETE").exists() and p.name.split("-", 1)[1].isdigit()
    ]
    return max(steps, default=0)


class Supervisor:
    def __init__(
        self,
        job: JobRecord,
        store: JobStore,
        blobs: BlobStore,
        executor: Executor,
        on_done: Callable[[], None] = lambda: None,
        diagnoser: JobDiagnoser | None = None,
        gpu_indices: tuple[int, ...] | None = None,
    ) -> None:
        self.on_done = on_done
        self.diagnoser = diagnoser or JobDiagnoser()
        self.gpu_indices = gpu_indices
        self.job = job
        self.store = store
        self.blobs = blobs
        self.executor = executor
        self.workspace = Path(job.workspace)
        # The attempt this supervisor runs: it may close only that one (another host may have moved on).
        self.attempt = job.attempts[-1].number if job.attempts else None
        self._handle: RunHandle | None = None
        self._lock = threading.Lock()
        self._stop_reason: str | None = None  # "cancel", "shutdown" or "lost"
        self._finishing = False
        self._last_error = ""
        self._last_error_code = ""
        self._last_hint = ""
        self._log_tail: deque[str] = deque(maxlen=LOG_LINES_SENT)  # the evidence a diagnosis reads
        self.thread = threading.Thread(target=self._run, name=f"job-{job.id}", daemon=True)

    # -- control from other threads ----------------------------------------------------------------
    def cancel(self) -> None:
        with self._lock:
            self._stop_reason = "cancel"
            if self._handle is not None:
                self._handle.kill()

    def preempt(self) -> None:
        """Daemon shutdown: ask the runner to checkpoint; the job goes back to the queue."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = "shutdown"
            if self._handle is not None:
                self._handle.terminate()

    def kill(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.kill()

    def abandon(self, why: str) -> bool:
        """This host no longer holds the job's lease: stop the runner now, without a checkpoint (another
        host may be resuming in the same workspace), and leave the job's record to that host. False if
        the attempt had already ended here."""
        with self._lock:
            if self._finishing:
                return False
            self._stop_reason = "lost"
            if self._handle is not None:
                self._handle.kill()
        log.warning("lease_lost", job=self.job.id, attempt=self.attempt, why=why)
        return True

    # -- the attempt ---------------------------------------------------------------------------------
    def emit(self, event: jobs_pb2.JobEvent) -> None:
        if event.WhichOneof("payload") == "error":
            self._last_error = event.error.message
            self._last_error_code = event.error.code
            self._last_hint = event.error.hint
            self._log_tail.append(f"error {event.error.code}: {event.error.message}")
        elif event.WhichOneof("payload") == "log":
            self._log_tail.append(event.log.message)
        self.store.append_event(self.job.id, event)  # the store publishes it to watchers on commit

    def daemon_log(self, message: str, level: str = "info") -> None:
        self.emit(jobs_pb2.JobEvent(log=jobs_pb2.LogEvent(level=level, message=message, source="daemon")))

    def _finish(
        self,
        outcome: str,
        reason: str,
        to: str,
        error: str | None = None,
        train: dict[str, Any] | None = None,
        diagnosis: tuple[str, str] | None = None,
        memory_bytes: int | None = None,
    ) -> None:
        with self._lock:
            self._finishing = True
        self.store.finish_attempt(
            self.job.id,
            outcome,
            reason,
            to,
            error,
            train=train,
            diagnosis=diagnosis,
            attempt=self.attempt,
            memory_bytes=memory_bytes,
        )
        log.info("attempt_finished", job=self.job.id, outcome=outcome, state=to, reason=reason)

    def _fail(self, outcome: str, reason: str, error: str, code: str = "") -> None:
        """The job fails for good: ask for a diagnosis (bounded; the rules answer when the brain cannot),
        show it in the job's log and keep it with the job."""
        job = self.store.get(self.job.id)
        tried = [a.reason for a in job.attempts if a.outcome in remedy.REMEDIED_OUTCOMES]
        found = self.diagnoser(
            job.spec.get("brain"),
            job.owner,
            code or self._last_error_code,
            error,
            list(self._log_tail),
            tried,
        )
        self.daemon_log(f"diagnosis ({found.brain}): {found.text()}", level="warning")
        self._finish(outcome, reason, J.FAILED, error=error, diagnosis=(found.text(), found.brain))

    def _run(self) -> None:
        try:
            self._attempt()
        except J.LeaseLost:
            log.warning("attempt_taken_over", job=self.job.id, attempt=self.attempt)
        except Exception as exc:  # a job must never take the daemon down with it
            log.exception("supervisor_crashed", job=self.job.id)
            self.emit(
                jobs_pb2.JobEvent(
                    error=jobs_pb2.ErrorEvent(
                        code="internal",
                        message=f"forged failed while supervising this job: {exc}",
                        hint="this is a bug in forged; the daemon log has the traceback",
                    )
                )
            )
            self._fail("failed", "internal error", str(exc), code="internal")
        finally:
            self.on_done()

    def _attempt(self) -> None:
        if "export" in self.job.spec:
            self._conclude(self._export(self.job.spec["export"]), product="gguf")
            return
        spec = self.job.spec.get("train", {})
        adapter = self.store.get(self.job.id).artifacts.get("adapter")
        if adapter and Path(adapter).is_dir():
            # An earlier attempt finished training and was interrupted while exporting: only export again.
            self.daemon_log("training already finished; exporting")
            code: int | None = 0
        else:
            try:
                model = resolve(spec.get("model", "tiny"), self.daemon_log)
            except ModelError as exc:
                self.emit(jobs_pb2.JobEvent(error=jobs_pb2.ErrorEvent(code="model", message=str(exc))))
                self._fail("failed", "model unavailable", str(exc), code="model")
                return
            spec_path = self._write_runner_spec(spec, model.to_runner())
            resumed = latest_checkpoint_step(self.workspace / "checkpoints")
            request = RunRequest(self.job.id, self.workspace, spec_path, gpu_indices=self.gpu_indices)
            code = self._run_process(request, resumed)
        if not spec.get("export") or code != 0 or "adapter" not in self.store.get(self.job.id).artifacts:
            self._conclude(code)
            return
        code = self._export({})
        self._conclude(code, product="gguf", exported_after_training=True)

    def _run_process(self, request: RunRequest, resumed: int = 0) -> int | None:
        """Start one process of this job and relay its events until it exits; None if stopped first."""
        with self._lock:
            if self._stop_reason is not None:
                return None
            try:
                self._handle = self.executor.start(request)
            except ExecutorError as exc:
                self.emit(jobs_pb2.JobEvent(error=jobs_pb2.ErrorEvent(code="executor", message=str(exc))))
                return EXIT_BAD_INPUT  # retrying cannot help until someone acts on the message
        handle = self._handle
        try:
            self.store.set_attempt_process(
                self.job.id, handle.pid or 0, handle.pid_started or 0.0, resumed, attempt=self.attempt
            )
        except J.LeaseLost:
            handle.kill()
            handle.wait()
            raise
        log.info("process_started", job=self.job.id, entry=request.entry, pid=handle.pid, resumed=resumed)
        if getattr(handle, "reattached", False):
            # A container that kept training while forged was down: it goes on from where it is.
            self.daemon_log("reattached to the job's container, which kept running while forged was down")
        elif resumed:
            self.daemon_log(f"resuming from the checkpoint at step {resumed}")
        with (self.workspace / "runner.log").open("a", encoding="utf-8") as raw:
            for line in handle.lines():
                raw.write(line + "\n")
                if line.strip():
                    self.emit(parse_runner_line(line))
        code = handle.wait()
        with self._lock:
            self._handle = None
        return code

    # -- export (forged/export/stage.py drives it through these) -----------------------------------
    def _export(self, spec: dict[str, Any]) -> int | None:
        options = export_stage.ExportOptions.from_spec(spec)
        source = self.store.get(spec["source_job"]) if spec.get("source_job") else self.store.get(self.job.id)
        self.workspace.mkdir(parents=True, exist_ok=True)

        def runner_model() -> dict[str, str]:
            return resolve(export_stage.source_model(source), self.daemon_log).to_runner()

        try:
            return export_stage.run_export(self, self.job.id, source, options, runner_model)
        except ModelError as exc:
            self.fail("model", str(exc))
            return EXIT_BAD_INPUT

    def run_step(self, entry: tuple[str, ...], spec: dict[str, Any], spec_name: str) -> int | None:
        path = export_stage.write_spec(self.workspace / spec_name, spec)
        request = RunRequest(self.job.id, self.workspace, path, entry=entry, gpu_indices=self.gpu_indices)
        return self._run_process(request)

    def artifacts(self) -> dict[str, str]:
        return self.store.get(self.job.id).artifacts

    def emit_artifact(self, name: str, path: str) -> None:
        self.emit(jobs_pb2.JobEvent(artifact=jobs_pb2.ArtifactEvent(name=name, path=path)))

    def log(self, message: str, level: str = "info") -> None:
        self.daemon_log(message, level)

    def fail(self, code: str, message: str, hint: str = "") -> None:
        self.emit(jobs_pb2.JobEvent(error=jobs_pb2.ErrorEvent(code=code, message=message, hint=hint)))

    def _conclude(
        self, code: int | None, product: str = "adapter", exported_after_training: bool = False
    ) -> None:
        if self._stop_reason == "lost":
            log.info("attempt_abandoned", job=self.job.id, attempt=self.attempt)
            return
        job = self.store.get(self.job.id)
        exporting = product == "gguf"
        if self._stop_reason == "cancel" or job.cancel_requested:
            self._finish("cancelled", "cancelled by user", J.CANCELLED)
        elif self._stop_reason == "shutdown":
            self._finish("interrupted", "forged is shutting down; resumes from the last checkpoint", J.QUEUED)
        elif code == 0 and product in job.artifacts:
            self._finish("succeeded", "exported" if exporting else "training finished", J.SUCCEEDED)
        elif code == EXIT_PREEMPTED:
            self._finish("interrupted", "the runner was stopped; resumes from the last checkpoint", J.QUEUED)
        elif exporting:
            # Training's self-healing remedies (smaller batches, lower learning rate) do not fit an export.
            why = self._explained() or self._describe_exit(code)
            if exported_after_training:
                why = f"training succeeded but the export failed: {why}; retry with: forgectl export {job.id}"
            self._fail("failed", "export failed", why)
        else:
            self._fail_or_heal(job, code)

    def _fail_or_heal(self, job: JobRecord, code: int | None) -> None:
        if not self._last_error:
            killed = code == -signal.SIGKILL
            why = " (most likely out of memory)" if killed else ""
            self.emit(
                jobs_pb2.JobEvent(
                    error=jobs_pb2.ErrorEvent(
                        # The kernel's OOM killer (and a container's memory limit) kill with SIGKILL.
                        code="oom" if killed else "crashed",
                        message=self._describe_exit(code) + why,
                        hint=f"the full runner output is in {self.workspace / 'runner.log'}",
                    )
                )
            )
        if code == EXIT_BAD_INPUT:
            self._fail("rejected", self._last_error, self._explained())
            return
        previous = [a.outcome for a in job.attempts if a.outcome in remedy.REMEDIED_OUTCOMES]
        train = job.spec.get("train", {})
        qlora_missing = functools.cache(self._qlora_missing)
        cure = remedy.remedy_for(self._last_error_code, self._last_error, train, previous, qlora_missing)
        if cure is None:
            final = remedy.diagnosis(self._last_error_code, self._explained(), previous, qlora_missing)
            self._fail("failed", self._last_error, final)
            return
        self.daemon_log(f"self-healing: {cure.reason}", level="warning")
        memory = self._reservation_for(job, cure.train)
        self._finish(cure.outcome, cure.reason, J.QUEUED, train=cure.train, memory_bytes=memory)

    def _qlora_missing(self) -> str:
        if not self.gpu_indices:
            return remedy.on_cpu()
        missing = self.executor.qlora_missing(self.gpu_indices)
        if missing:
            self.daemon_log(f"self-healing skips 4-bit base weights: {missing}")
        return missing

    def _reservation_for(self, job: JobRecord, train: dict[str, Any]) -> int | None:
        """The GPU memory the next attempt reserves: the planner's estimate at the healed settings (a
        smaller micro-batch, gradient checkpointing, 4-bit weights all need less), so the scheduler places
        it by what it will use, not what it used to; None where the estimate cannot say (keep the old one)."""
        after = estimate_memory(train)
        before = Need.of(job.spec).memory_bytes
        if not after or after == before:
            return None
        was = Need(memory_bytes=before).per_gpu()
        self.daemon_log(f"GPU memory reserved for the next attempt: {gib(after)} (was {was})")
        return after

    def _explained(self) -> str:
        return self._last_error + (f" ({self._last_hint})" if self._last_hint else "")

    @staticmethod
    def _describe_exit(code: int | None) -> str:
        if code is None:
            return "the runner did not start"
        if code < 0:
            return f"the runner was killed by {signal.Signals(-code).name}"
        if code == 0:
            return "the runner exited without producing an adapter"
        return f"the runner exited with status {code}"

    def _write_runner_spec(self, spec: dict[str, Any], model: dict[str, str]) -> Path:
        data = self.workspace / "data"
        for sub in (data, self.workspace / "checkpoints", self.workspace / "output"):
            sub.mkdir(parents=True, exist_ok=True)
        files: dict[str, str | None] = {}
        for key, digest in (("train_file", spec.get("train_data")), ("val_file", spec.get("val_data"))):
            if not digest:
                files[key] = None
                continue
            dst = data / ("train.jsonl" if key == "train_file" else "val.jsonl")
            if not dst.exists():
                _link_or_copy(self.blobs.path(digest), dst)
            files[key] = str(dst)
        runner_spec = {
            "job_id": self.job.id,
            "model": model,
            **files,
            "output_dir": str(self.workspace / "output"),
            "checkpoint_dir": str(self.workspace / "checkpoints"),
            # An empty string is proto3's unset (a client that never heard of `method`): the runner's default.
            "hparams": {k: spec[k] for k in RUNNER_FIELDS if spec.get(k, "") != ""},
        }
        path = self.workspace / "runner_spec.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(runner_spec, indent=2))
        os.replace(tmp, path)
        return path


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
