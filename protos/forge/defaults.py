"""Where the per-user daemon lives: part of the contract both forged and forgectl rely on."""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "forged.sock"
SYSTEM_SOCKET = "/run/forged/forged.sock"


def state_dir() -> Path:
    """The per-user daemon's state: database, artifacts, job workspaces, logs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "forge"


def socket_path() -> Path:
    """The per-user daemon's socket: in the runtime dir when the session has one, else the state dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "forge" / SOCKET_NAME
    return state_dir() / SOCKET_NAME


def default_address() -> str:
    return f"unix://{socket_path()}"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "forge"


def grpc_target(address: str) -> str:
    """Map forge's address forms (unix://PATH, unix:PATH, tcp://HOST:PORT, HOST:PORT) to a gRPC target."""
    if address.startswith("unix://"):
        return "unix://" + address[len("unix://") :]
    if address.startswith("unix:"):
        return "unix://" + address[len("unix:") :]
    if address.startswith("tcp://"):
        return address[len("tcp://") :]
    return address
