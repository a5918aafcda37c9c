"""Talking to forged: addresses, the channel, auth metadata, autostart, and gRPC errors → exit codes."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import grpc
from forge import defaults
from forge.v1 import (
    artifacts_pb2_grpc,
    brain_pb2_grpc,
    daemon_pb2_grpc,
    hardware_pb2_grpc,
    jobs_pb2_grpc,
    projects_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Exit codes are part of the CLI's contract with scripts and CI.
EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# The caller asked for something the daemon will never do as asked: retrying the same command cannot help.
_USAGE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

HEALTH_TIMEOUT_S = 1.0
AUTOSTART_WAIT_S = 15.0
CHUNK_SIZE = 1 << 20

# Reconnect quickly after a daemon restart instead of gRPC's default backoff (1 s growing to 2 min).
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class ForgeError(Exception):
    """An error the CLI reports as one line and an exit code; never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, code: str | None = None) -> None:
        super().__init__(message)
        self.message = one_line(message)
        self.exit_code = exit_code
        self.code = code or {EXIT_UNREACHABLE: "UNAVAILABLE", EXIT_USAGE: "INVALID_ARGUMENT"}.get(
            exit_code, "UNKNOWN"
        )


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def exit_code_for(code: grpc.StatusCode | None) -> int:
    if code in _USAGE_CODES:
        return EXIT_USAGE
    if code in _UNREACHABLE_CODES:
        return EXIT_UNREACHABLE
    # INTERNAL, UNKNOWN, DATA_LOSS and the like: the command failed, but not because of how it was asked.
    return EXIT_JOB_FAILED


def rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            value = code()
        except Exception:
            return None
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def from_rpc_error(exc: grpc.RpcError) -> ForgeError:
    code = rpc_code(exc)
    details_fn = getattr(exc, "details", None)
    details = details_fn() if callable(details_fn) else None
    name = code.name if code is not None else "UNKNOWN"
    return ForgeError(details or name.lower().replace("_", " "), exit_code_for(code), name)


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Address:
    scheme: Literal["unix", "tcp"]
    location: str  # an absolute socket path, or host:port

    @property
    def target(self) -> str:
        return f"unix://{self.location}" if self.scheme == "unix" else self.location

    @property
    def host(self) -> str:
        return self.location.rpartition(":")[0].strip("[]") if self.scheme == "tcp" else ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.location}"


def parse_address(text: str, cwd: Path | None = None) -> Address:
    """Accept unix:///abs, unix:rel, /abs, tcp://host:port and host:port; reject the rest with a reason."""
    raw = text.strip()
    if not raw:
        raise ForgeError("empty daemon address")
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
        if not path.startswith("/"):
            raise ForgeError(
                f"bad daemon address {text!r}: unix:// needs an absolute path "
                f"(use unix:{path} for a relative one)"
            )
        return Address("unix", os.path.normpath(path))
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if not path:
            raise ForgeError(f"bad daemon address {text!r}: no socket path")
        # gRPC resolves a relative unix: path against its own cwd; an absolute path means the same everywhere.
        return Address("unix", os.path.normpath(os.path.join(cwd or os.getcwd(), path)))
    if raw.startswith("/"):
        return Address("unix", os.path.normpath(raw))
    if raw.startswith("tcp://"):
        hostport = raw[len("tcp://") :]
    elif "://" in raw:
        raise ForgeError(f"bad daemon address {text!r}: use unix:///path, unix:path or tcp://host:port")
    else:
        hostport = raw
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ForgeError(f"bad daemon address {text!r}: expected tcp://host:port")
    return Address("tcp", f"{host}:{int(port)}")


# ---------------------------------------------------------------- auth


def load_token(env: Mapping[str, str] | None = None, config_dir: Path | None = None) -> str | None:
    """FORGE_TOKEN wins over the token file, so a one-off override never needs the file edited."""
    env = os.environ if env is None else env
    token = (env.get("FORGE_TOKEN") or "").strip()
    if token:
        return token
    path = (config_dir or defaults.config_dir()) / "token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgeError(f"cannot read the token file {path}: {exc}") from exc
    return token or None


def call_metadata(token: str | None, user: str | None = None) -> tuple[tuple[str, str], ...]:
    pairs = [("x-forge-user", user if user is not None else _current_user())]
    if token:
        pairs.insert(0, ("authorization", f"Bearer {token}"))
    return tuple(pairs)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers with a random uid): the daemon falls back to its own
        return str(os.getuid())


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the same metadata to every call, so no call site can forget the token."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = tuple(pairs)

    def _with_metadata(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._pairs]
        return _ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_metadata(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_metadata(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._with_metadata(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._with_metadata(client_call_details), request_iterator)


# ---------------------------------------------------------------- channel


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def open_channel(address: Address, tls_ca: Path | None = None, *, private: bool = False) -> grpc.Channel:
    options = list(_CHANNEL_OPTIONS)
    if private:
        # A fresh subchannel, so a probe never inherits the backoff of an earlier failed connect.
        options.append(("grpc.use_local_subchannel_pool", 1))
    if address.scheme == "tcp" and _is_loopback(address.host):
        # An http_proxy set for model downloads must not swallow a loopback daemon.
        options.append(("grpc.enable_http_proxy", 0))
    if address.scheme == "tcp" and tls_ca is not None:
        try:
            roots = tls_ca.read_bytes()
        except OSError as exc:
            raise ForgeError(f"cannot read the TLS CA file {tls_ca}: {exc}") from exc
        return grpc.secure_channel(address.target, grpc.ssl_channel_credentials(roots), options=options)
    return grpc.insecure_channel(address.target, options=options)


HealthState = Literal["serving", "not_serving", "unreachable"]


def probe(address: Address, tls_ca: Path | None = None, timeout: float = HEALTH_TIMEOUT_S) -> HealthState:
    channel = open_channel(address, tls_ca, private=True)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        if rpc_code(exc) in _UNREACHABLE_CODES:
            return "unreachable"
        # Something answered (say, without the health service): it is a server, let the real call decide.
        return "serving" if rpc_code(exc) == grpc.StatusCode.UNIMPLEMENTED else "not_serving"
    finally:
        channel.close()
    return "serving" if reply.status == health_pb2.HealthCheckResponse.SERVING else "not_serving"


def unreachable_message(address: Address) -> str:
    return (
        f"cannot reach forged at {address}: is it running? start it with `forged` or `systemctl start forged`"
    )


def autostart(
    address: Address,
    notice: Callable[[str], None],
    wait_s: float = AUTOSTART_WAIT_S,
    command: list[str] | None = None,
) -> int:
    """Start the per-user daemon detached from this terminal and wait until it serves; returns its pid."""
    state = defaults.state_dir()
    log_path = state / "forged.out"
    try:
        state.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it; we close our copy below
    except OSError as exc:
        raise ForgeError(f"cannot start forged: {state}: {exc}", EXIT_UNREACHABLE) from exc
    try:
        proc = subprocess.Popen(
            command or [sys.executable, "-m", "forged"],
            # Its own session: closing this terminal or Ctrl-C here must not take the daemon down.
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(state),
            close_fds=True,
        )
    except OSError as exc:
        raise ForgeError(f"cannot start forged: {exc}", EXIT_UNREACHABLE) from exc
    finally:
        log.close()
    deadline = time.monotonic() + wait_s
    while True:
        if probe(address) == "serving":
            notice(f"started forged in the background (pid {proc.pid}); logs: {log_path}")
            return proc.pid
        code = proc.poll()
        if code is not None:
            # Another forgectl may have won the race to start it; give that daemon a moment.
            if probe(address, timeout=2.0) == "serving":
                return proc.pid
            raise ForgeError(f"forged exited at start (exit code {code}); see {log_path}", EXIT_UNREACHABLE)
        if time.monotonic() > deadline:
            raise ForgeError(
                f"started forged (pid {proc.pid}) but it is not serving at {address} after {wait_s:.0f} s; "
                f"see {log_path}",
                EXIT_UNREACHABLE,
            )
        time.sleep(0.2)


class Client:
    """Stubs over one channel that carries the caller's identity on every call."""

    def __init__(self, channel: grpc.Channel, address: Address, metadata: Iterable[tuple[str, str]]) -> None:
        self.address = address
        self._raw = channel
        self.channel = grpc.intercept_channel(channel, _MetadataInterceptor(metadata))
        self.jobs = jobs_pb2_grpc.JobsStub(self.channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactsStub(self.channel)
        self.brain = brain_pb2_grpc.BrainStub(self.channel)
        self.daemon = daemon_pb2_grpc.DaemonStub(self.channel)
        self.hardware = hardware_pb2_grpc.HardwareStub(self.channel)
        self.projects = projects_pb2_grpc.ProjectsStub(self.channel)

    def close(self) -> None:
        self._raw.close()


def connect(
    daemon: str | None,
    tls_ca: str | None,
    notice: Callable[[str], None],
    *,
    allow_autostart: bool = True,
) -> Client:
    """Open a client to the named daemon, or to the per-user one, starting it when nothing answers."""
    named = bool(daemon)
    address = parse_address(daemon if daemon else defaults.default_address())
    ca = Path(tls_ca).expanduser() if tls_ca else None
    if ca is not None and not ca.is_file():
        raise ForgeError(f"TLS CA file {ca} does not exist or is not a file")
    metadata = call_metadata(load_token())
    if probe(address, ca) == "unreachable":
        if named or not allow_autostart:
            raise ForgeError(unreachable_message(address), EXIT_UNREACHABLE, "UNAVAILABLE")
        autostart(address, notice)
    return Client(open_channel(address, ca), address, metadata)


# ---------------------------------------------------------------- local input checks


def check_data_file(path_text: str) -> Path:
    """Fail before any RPC, with a reason a person can act on, when the data file cannot be sent."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ForgeError(f"data file {path_text!r} does not exist")
    if path.is_dir():
        raise ForgeError(f"data file {path_text!r} is a directory, not a file")
    if not path.is_file():
        raise ForgeError(f"data file {path_text!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ForgeError(f"data file {path_text!r} is not readable (check its permissions)")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ForgeError(f"cannot read data file {path_text!r}: {exc.strerror or exc}") from exc
    if path.stat().st_size == 0:
        raise ForgeError(f"data file {path_text!r} is empty")
    return path


def upload_requests(
    path: Path, progress: Callable[[int], None] | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterable[Any]:
    """The Upload client stream: the header, then the file in chunks (read lazily, never all in memory)."""
    from forge.v1 import artifacts_pb2

    size = path.stat().st_size
    yield artifacts_pb2.UploadRequest(header=artifacts_pb2.UploadHeader(name=path.name, size=size))
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield artifacts_pb2.UploadRequest(chunk=chunk)
            if progress is not None:
                progress(len(chunk))
