"""Shared-box mode: every call needs a token, users see only their own jobs, admins see all."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from forge.v1 import daemon_pb2, hardware_pb2, hardware_pb2_grpc, jobs_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import EXAMPLE_CSV, Forged, bearer, create_token, forge_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def shared_box(tmp_path: Path):  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    tokens = {
        "alice": create_token(state, "alice"),
        "bob": create_token(state, "bob"),
        "root": create_token(state, "root", "--admin"),
    }
    d = Forged(state, "--auth", "token").start()
    try:
        yield d, tokens
    finally:
        d.cleanup()


def test_calls_without_a_valid_token_are_unauthenticated(shared_box) -> None:  # type: ignore[no-untyped-def]
    d, _ = shared_box
    for metadata in ((), bearer("forge_not-a-real-token"), (("authorization", "Basic abc"),)):
        with pytest.raises(grpc.RpcError) as info:
            d.daemon.Status(daemon_pb2.DaemonStatusRequest(), metadata=metadata, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "forged token create" in info.value.details()
    # Health stays open so systemd and clients can probe before they hold a token.
    assert health_pb2_grpc.HealthStub(d.channel).Check(health_pb2.HealthCheckRequest()).status == 1


def test_each_user_sees_and_controls_only_their_own_jobs(shared_box) -> None:  # type: ignore[no-untyped-def]
    d, tokens = shared_box
    d.metadata = bearer(tokens["alice"])
    spec = d.train_spec(EXAMPLE_CSV, max_steps=3000, checkpoint_every=1000)
    alices = d.submit(spec)
    assert alices.owner == "alice"
    assert d.daemon.Status(daemon_pb2.DaemonStatusRequest(), metadata=d.metadata).user == "alice"

    bob = bearer(tokens["bob"])
    for call in (
        lambda: d.jobs.Get(jobs_pb2.GetJobRequest(id=alices.id), metadata=bob),
        lambda: list(d.jobs.Watch(jobs_pb2.WatchJobRequest(id=alices.id), metadata=bob)),
        lambda: d.jobs.Cancel(jobs_pb2.CancelJobRequest(id=alices.id), metadata=bob),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(d.jobs.List(jobs_pb2.ListJobsRequest(), metadata=bob).jobs) == []
    with pytest.raises(grpc.RpcError) as info:
        d.jobs.List(jobs_pb2.ListJobsRequest(all_users=True), metadata=bob)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A runner image is everyone's: only an admin builds one.
    build = hardware_pb2.BuildImageRequest(arch="cpu", dry_run=True)
    with pytest.raises(grpc.RpcError) as info:
        list(hardware_pb2_grpc.HardwareStub(d.channel).BuildImage(build, metadata=bob, timeout=30))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ask an admin" in info.value.details()
    # Bob cannot train on Alice's uploaded data by guessing its digest.
    with pytest.raises(grpc.RpcError) as info:
        d.jobs.Submit(jobs_pb2.SubmitJobRequest(request_id="b1", spec=spec), metadata=bob)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    admin = bearer(tokens["root"])
    everyone = d.jobs.List(jobs_pb2.ListJobsRequest(all_users=True), metadata=admin).jobs
    assert [j.id for j in everyone] == [alices.id]
    cancelled = d.jobs.Cancel(jobs_pb2.CancelJobRequest(id=alices.id), metadata=admin, timeout=30)
    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED


def test_tcp_needs_tls_unless_loopback_is_explicitly_allowed(tmp_path: Path) -> None:
    def forged(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "forged", "--state-dir", str(tmp_path / "s"), *args],
            env=forge_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    plain = forged("--listen", "tcp://127.0.0.1:0")
    assert plain.returncode == 2 and "TLS" in plain.stderr and "Traceback" not in plain.stderr
    public = forged("--listen", "tcp://0.0.0.0:0", "--insecure-loopback")
    assert public.returncode == 2 and "loopback" in public.stderr


def test_tls_listener_serves_a_client_that_trusts_its_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    state = tmp_path / "state"
    token = create_token(state, "carol")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forged",
            "--state-dir",
            str(state),
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--auth",
            "token",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=forge_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", creds) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            from forge.v1 import daemon_pb2_grpc

            status = daemon_pb2_grpc.DaemonStub(ch).Status(
                daemon_pb2.DaemonStatusRequest(), metadata=bearer(token), timeout=10
            )
        assert status.user == "carol" and status.auth == "token"
    finally:
        proc.terminate()
        proc.wait(30)
