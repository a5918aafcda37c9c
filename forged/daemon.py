"""The composition root: wires store, queue, executor and API together and runs them until told to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import structlog
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError

from forged.api.artifacts import ArtifactsService
from forged.api.auth import Authenticator
from forged.api.brain import BrainService
from forged.api.daemon import DaemonService
from forged.api.hardware import HardwareService
from forged.api.jobs import JobsService
from forged.api.projects import ProjectsService
from forged.api.server import build_server
from forged.brain.diagnosis import JobDiagnoser
from forged.brain.llm.keys import KeyStore
from forged.brain.llm.retry import RetryPolicy
from forged.brain.llm.select import BrainDefaults, BrainSelector
from forged.config import ConfigError, DaemonConfig
from forged.executors.base import Executor, ExecutorError
from forged.executors.docker import DockerExecutor
from forged.executors.local import LocalExecutor
from forged.hardware.nvml import GpuMonitor
from forged.queue.bus import EventBus
from forged.queue.scheduler import Scheduler
from forged.store.blobs import BlobStore
from forged.store.db import Database
from forged.store.jobs import JobStore
from forged.store.projects import ProjectStore
from forged.store.users import UserStore

log = structlog.get_logger("forged")


def open_database(config: DaemonConfig) -> Database:
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shown = make_url(config.database_url).render_as_string(hide_password=True)
    try:
        db = Database(config.database_url)
        db.migrate()
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"--db {shown} needs the Python package {exc.name}; "
            "for PostgreSQL: pip install 'forge-llm[postgres]'"
        ) from exc
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise ConfigError(f"cannot open the database {shown}: {reason}") from exc
    return db


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.db = open_database(config)
        self.bus = EventBus()
        self.store = JobStore(self.db, publish=self.bus.publish)
        self.blobs = BlobStore(config.files_dir / "blobs", self.db)
        self.auth = Authenticator(config.auth, UserStore(self.db))
        hardware = self.hardware = GpuMonitor(config.gpu_refresh_seconds)
        self.brains = brain_selector(config)
        self.executor = make_executor(config, hardware)
        self.scheduler = Scheduler(
            self.store,
            self.blobs,
            self.executor,
            max_running=config.max_running_jobs,
            max_per_user=config.max_jobs_per_user,
            gpus=hardware,
            slots_per_gpu=config.jobs_per_gpu,
            diagnoser=JobDiagnoser(self.brains, config.diagnosis_timeout),
            host=config.host,
            lease_seconds=config.lease_seconds,
        )
        jobs_root = config.files_dir / "jobs"
        jobs_root.mkdir(parents=True, exist_ok=True)
        projects = ProjectStore(self.db)
        self.server, self.health = build_server(
            self.auth,
            JobsService(self.store, self.blobs, self.bus, self.scheduler, self.auth, jobs_root, projects),
            ArtifactsService(self.blobs, self.auth, config.max_upload_bytes),
            HardwareService(
                hardware, self.auth, self.executor if isinstance(self.executor, DockerExecutor) else None
            ),
            BrainService(self.blobs, self.auth, config.state_dir / "scratch", hardware, self.brains),
            DaemonService(self.store, self.auth, datetime.now(UTC), str(config.state_dir), self.db.dialect),
            config.rpc_threads,
            ProjectsService(projects, self.auth),
        )
        self._stopped = threading.Event()

    def _bind(self) -> str:
        sock = self.config.socket_path
        if sock is not None:
            sock.parent.mkdir(
                parents=True, exist_ok=True, mode=0o700 if self.config.auth == "none" else 0o755
            )
            if sock.exists():
                if _socket_in_use(sock):
                    raise ConfigError(f"another forged is already listening on {sock}")
                sock.unlink()
            # Create the socket already private: chmod after bind would leave a window open to everyone.
            old = os.umask(0o777 & ~self.config.effective_socket_mode)
            try:
                self.server.add_insecure_port(f"unix://{sock}")
            finally:
                os.umask(old)
            return f"unix://{sock}"
        hostport = self.config.listen[len("tcp://") :]
        if self.config.tls_cert and self.config.tls_key:
            creds = grpc.ssl_server_credentials(
                [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
            )
            port = self.server.add_secure_port(hostport, creds)
        else:
            port = self.server.add_insecure_port(hostport)
        if port == 0:
            raise ConfigError(f"cannot listen on {hostport}: address in use or not available")
        return f"tcp://{hostport.rsplit(':', 1)[0]}:{port}"

    def start(self) -> str:
        try:
            self.hardware.start()  # the first reading before the first job is placed
        except ValueError as exc:  # FORGE_FAKE_GPUS that does not parse
            raise ConfigError(str(exc)) from exc
        recovered = self.scheduler.recover()
        if isinstance(self.executor, DockerExecutor):
            # After recover: a job it requeued keeps its container, to reattach to when it starts again.
            self.executor.remove_stale({job_id for job_id, _ in self.store.queue_order()})
        address = self._bind()
        self.server.start()
        self.scheduler.start()
        self.scheduler.poke()
        log.info(
            "forged_started",
            address=address,
            pid=os.getpid(),
            auth=self.config.auth,
            database=self.db.dialect,
            host=self.config.host,
            recovered_jobs=recovered,
            state_dir=str(self.config.state_dir),
        )
        return address

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("forged_stopping")
        self.health.enter_graceful_shutdown()
        self.scheduler.stop(self.config.shutdown_grace)
        self.hardware.stop()
        self.bus.close()
        self.server.stop(grace=2).wait()
        sock = self.config.socket_path
        if sock is not None:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        self.db.dispose()
        log.info("forged_stopped")

    def serve_forever(self) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        self.stop()


def make_executor(config: DaemonConfig, hardware: GpuMonitor) -> Executor:
    if config.executor == "local":
        return LocalExecutor()
    try:
        return DockerExecutor.connect(
            gpus=lambda: hardware.get().gpus,
            repository=config.docker_repository,
            memory_bytes=config.docker_memory_bytes,
            pids_limit=config.docker_pids,
            host=config.host,
        )
    except ExecutorError as exc:
        raise ConfigError(str(exc)) from exc


def brain_selector(config: DaemonConfig) -> BrainSelector:
    defaults = BrainDefaults(
        kind=config.brain,
        model=config.brain_model,
        endpoint=config.brain_endpoint,
        gemini_url=config.gemini_url,
        allowed_endpoints=frozenset(config.allowed_brain_endpoints),
        timeout_s=config.brain_timeout,
        policy=RetryPolicy(),
    )
    return BrainSelector(KeyStore(config.keys_dir), defaults)


def _socket_in_use(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False
