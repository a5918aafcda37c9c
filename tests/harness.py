"""Run a real forged on a real socket for tests, and talk to it the way forgectl does."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from forge.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    brain_pb2,
    brain_pb2_grpc,
    daemon_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CSV = REPO / "examples" / "customer_support.csv"
TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}


def forge_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for key in ("FORGE_DAEMON", "FORGE_TOKEN"):
        env.pop(key, None)
    env.update(extra)
    return env


class Forged:
    """A forged subprocess. The socket lives in a short temp dir: unix socket paths max out at 107 bytes."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.sock_dir = Path(tempfile.mkdtemp(prefix="fg-"))
        self.address = f"unix://{self.sock_dir / 'forged.sock'}"
        self.args = list(args)
        self.env = env or forge_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self.metadata: tuple[tuple[str, str], ...] = ()

    def start(self, timeout: float = 30.0) -> Forged:
        log = (self.state_dir.parent / "forged.stderr").open("ab")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forged",
                "--state-dir",
                str(self.state_dir),
                "--listen",
                self.address,
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"forged exited with {self.proc.returncode}; see {log.name}")
            if self.healthy():
                return self
            time.sleep(0.1)
        raise TimeoutError("forged did not become healthy")

    def healthy(self) -> bool:
        try:
            with grpc.insecure_channel(self.address) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def reset_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reset_channel()

    def stop(self, timeout: float = 90.0) -> int:
        self.reset_channel()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    # -- typed clients ----------------------------------------------------------------------------------
    @property
    def jobs(self) -> jobs_pb2_grpc.JobsStub:
        return jobs_pb2_grpc.JobsStub(self.channel)

    @property
    def artifacts(self) -> artifacts_pb2_grpc.ArtifactsStub:
        return artifacts_pb2_grpc.ArtifactsStub(self.channel)

    @property
    def brain(self) -> brain_pb2_grpc.BrainStub:
        return brain_pb2_grpc.BrainStub(self.channel)

    @property
    def daemon(self) -> daemon_pb2_grpc.DaemonStub:
        return daemon_pb2_grpc.DaemonStub(self.channel)

    def upload(self, path: Path, metadata: tuple[tuple[str, str], ...] | None = None) -> str:
        data = path.read_bytes()

        def parts() -> Iterator[artifacts_pb2.UploadRequest]:
            yield artifacts_pb2.UploadRequest(
                header=artifacts_pb2.UploadHeader(name=path.name, size=len(data))
            )
            for i in range(0, len(data), 1 << 16):
                yield artifacts_pb2.UploadRequest(chunk=data[i : i + (1 << 16)])

        return self.artifacts.Upload(parts(), metadata=metadata or self.metadata, timeout=30).digest

    def train_spec(self, csv: Path, **hparams: object) -> jobs_pb2.JobSpec:
        """Upload + prepare a data file and return a ready train spec for the tiny model."""
        digest = self.upload(csv)
        prep = self.brain.Prepare(
            brain_pb2.PrepareRequest(data=digest, goal="support bot", seed=1),
            metadata=self.metadata,
            timeout=60,
        )
        train = jobs_pb2.TrainSpec(
            model="tiny",
            train_data=prep.train_data,
            val_data=prep.val_data,
            epochs=1,
            micro_batch_size=4,
            grad_accum=1,
            learning_rate=1e-3,
            lora_rank=8,
            lora_alpha=16,
            max_seq_len=128,
            seed=7,
            checkpoint_every=5,
            eval_every=10,
            warmup_ratio=0.0,
            goal="support bot",
        )
        for key, value in hparams.items():
            setattr(train, key, value)
        return jobs_pb2.JobSpec(name="test", train=train)

    def submit(self, spec: jobs_pb2.JobSpec, request_id: str | None = None) -> jobs_pb2.Job:
        req = jobs_pb2.SubmitJobRequest(request_id=request_id or str(uuid.uuid4()), spec=spec)
        return self.jobs.Submit(req, metadata=self.metadata, timeout=30)

    def get(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs.Get(jobs_pb2.GetJobRequest(id=job_id), metadata=self.metadata, timeout=10)

    def events(
        self, job_id: str, after: int = 0, follow: bool = False, timeout: float = 300
    ) -> list[jobs_pb2.JobEvent]:
        stream = self.jobs.Watch(
            jobs_pb2.WatchJobRequest(id=job_id, after_seq=after, follow=follow),
            metadata=self.metadata,
            timeout=timeout,
        )
        return list(stream)

    def wait_until(self, job_id: str, predicate, timeout: float = 300.0) -> jobs_pb2.Job:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if predicate(job):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} never reached the expected state: {self.get(job_id)}")


def create_token(state: Path, user: str, *flags: str) -> str:
    """`forged token create`, as an admin runs it; returns the token (its last line of output)."""
    out = subprocess.run(
        [sys.executable, "-m", "forged", "token", "create", user, "--state-dir", str(state), *flags],
        env=forge_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.contextmanager
def running_forged(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Forged]:
    d = Forged(state_dir, *args, env=env).start()
    try:
        yield d
    finally:
        d.cleanup()
