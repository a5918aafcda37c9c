"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, listen on loopback, delete afterwards.

No system service is needed, only the server binaries (Debian's `postgresql` package; .ci/run installs it).
initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (or `nobody`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def server_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: on PATH, or Debian's versioned directory (newest first)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    for d in sorted(debian, key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)[::-1]:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists for initdb")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yield a URL of the cluster's `postgres` database, user `forge`, trusted on loopback only."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl)")
    prefix = _run_as()
    # Not under pytest's tmp_path: that is private to root, and the server may run as another user.
    root = Path(tempfile.mkdtemp(prefix="forge-pg-"))
    data, log = root / "data", root / "server.log"
    if prefix:
        user = prefix[2]
        shutil.chown(root, user=user)
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "forge", "-A", "trust", "--no-sync"],
            **quiet,  # type: ignore[arg-type]
        )
        # fsync off: a test cluster never needs to survive an OS crash, and it halves commit latency.
        options = f"-k {root} -h 127.0.0.1 -p {port} -F -c max_connections=200"
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start"],
            **quiet,  # type: ignore[arg-type]
        )
        try:
            yield f"postgresql://forge@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(cluster_url: str) -> str:
    """A new, empty database on the cluster; returns its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster_url.rsplit("/", 1)[0] + f"/{name}"
