"""forged's settings, validated once at start-up."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

from forge import defaults
from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    pass


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: Path
    listen: str
    db_url: str | None = None
    auth: str = "none"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_loopback: bool = False
    socket_mode: int | None = None
    max_running_jobs: int | None = None  # None: one per GPU slot, one on a machine without GPUs
    jobs_per_gpu: int = 1
    gpu_refresh_seconds: float = 5.0
    max_jobs_per_user: int = 0  # 0: no per-user limit
    rpc_threads: int = 256
    shutdown_grace: float = 60.0
    max_upload_bytes: int = 20 << 30
    # The brain a request without a BrainChoice gets (offline, gemini, local) and where each backend lives.
    brain: str = "offline"
    brain_model: str = ""
    brain_endpoint: str = ""  # local: an OpenAI-compatible base URL (Ollama: http://127.0.0.1:11434/v1)
    gemini_url: str = ""  # empty: Google's endpoint; tests point it at a loopback fake
    allowed_brain_endpoints: tuple[str, ...] = ()  # more base URLs a request may name ("*": any)
    brain_timeout: float = 60.0  # seconds per LLM request
    diagnosis_timeout: float = 60.0  # the most a failed job waits for the brain's diagnosis in all
    # Several hosts on one PostgreSQL queue: each needs its own id, and all must see the same files.
    host_id: str | None = None
    shared_dir: Path | None = None  # blobs and job workspaces; shared storage for a multi-host queue
    lease_seconds: float = 30.0
    # Where runners run: local processes, or containers of the runner image for the job's GPUs.
    executor: str = "local"
    docker_repository: str = "forge"  # images are REPOSITORY:ARCH (forge:hopper, forge:cpu)
    docker_memory_bytes: int | None = None  # per container; None: nine tenths of the machine's memory
    docker_pids: int = 4096

    @model_validator(mode="after")
    def _check(self) -> DaemonConfig:
        if self.jobs_per_gpu < 1:
            raise ConfigError(f"--jobs-per-gpu {self.jobs_per_gpu}: give 1 or more")
        if self.gpu_refresh_seconds <= 0:
            raise ConfigError(f"--gpu-refresh {self.gpu_refresh_seconds:g}: give a number of seconds above 0")
        if self.auth not in ("none", "token"):
            raise ConfigError(f"--auth {self.auth}: use none or token")
        if self.brain not in ("offline", "gemini", "local"):
            raise ConfigError(f"--brain {self.brain}: use offline, gemini or local")
        if self.brain_timeout <= 0 or self.diagnosis_timeout <= 0:
            raise ConfigError("--brain-timeout and --diagnosis-timeout must be positive numbers of seconds")
        if self.listen.startswith("tcp://"):
            host = self.listen[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
            if self.tls_cert is None or self.tls_key is None:
                if not self.insecure_loopback:
                    raise ConfigError(
                        "listening on TCP needs TLS (--tls-cert and --tls-key), or --insecure-loopback for a "
                        "loopback-only address"
                    )
                if not _is_loopback(host):
                    raise ConfigError(f"--insecure-loopback only allows loopback addresses, not {host}")
            if self.auth == "none" and not _is_loopback(host):
                raise ConfigError("a TCP address other than loopback needs --auth token")
        elif not self.listen.startswith("unix:"):
            raise ConfigError(f"--listen {self.listen}: use unix://PATH or tcp://HOST:PORT")
        if self.executor not in ("local", "docker"):
            raise ConfigError(f"--executor {self.executor}: use local or docker")
        if self.docker_memory_bytes is not None and self.docker_memory_bytes < 64 << 20:
            raise ConfigError("--docker-memory: give at least 64m; a runner needs far more than that")
        if self.docker_pids < 64:
            raise ConfigError(f"--docker-pids {self.docker_pids}: give 64 or more (4096 is the default)")
        if self.lease_seconds < 1:
            raise ConfigError(f"--lease-seconds {self.lease_seconds:g}: use 1 or more (30 is the default)")
        return self

    @property
    def socket_path(self) -> Path | None:
        if not self.listen.startswith("unix:"):
            return None
        raw = self.listen.removeprefix("unix://").removeprefix("unix:")
        return Path(raw).expanduser().resolve()

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def host(self) -> str:
        """Stable across restarts, distinct between two forged on one machine (their state dirs differ)."""
        return self.host_id or f"{socket.gethostname()}:{self.state_dir}"

    @property
    def files_dir(self) -> Path:
        return self.shared_dir or self.state_dir

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'forge.db'}"

    @property
    def effective_socket_mode(self) -> int:
        if self.socket_mode is not None:
            return self.socket_mode
        # Per-user: only the owner. Shared box: the forge group connects, and tokens decide who is who.
        return 0o600 if self.auth == "none" else 0o660


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'16g', '512m', '2GiB', '1073741824' (Docker's notation) -> bytes; ConfigError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]) if match else 0
    if value <= 0:
        raise ConfigError(f"{text!r} is not a size: write e.g. 16g, 512m or a number of bytes")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_listen(state_dir: Path | None) -> str:
    if state_dir is not None:
        return f"unix://{state_dir / defaults.SOCKET_NAME}"
    return defaults.default_address()
