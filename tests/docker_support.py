"""A real Docker engine for tests, and the CPU runner image built from runner_image/docker/Dockerfile offline.

Images cannot be pulled here and a build cannot reach a package index. So the image is built the way the
docs tell anyone without a registry to build it: a Debian bookworm base made by runner_image.debian_base
(mmdebstrap, then `docker import`), a wheelhouse made by runner_image.wheelhouse from pip's own sources into a
cache folder outside the repository, and the Dockerfile built on both, with no network, by forged's own build
code (DockerExecutor.build). Each of the three is named by a hash of what went into it, so it is made once
per machine and made again when one of its inputs changes.

The engine is whatever DOCKER_HOST (else /var/run/docker.sock) points at; with none, the tests that need it
skip and say so. `.ci/run` starts one without a bridge and installs mmdebstrap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docker import DockerClient

REPO = Path(__file__).resolve().parent.parent
TEST_REPOSITORY = "forge-runner-test"  # the executor's --docker-repository in tests: <this>-<hash>:cpu
BASE_REPOSITORY = "forge-test-debian"
# Wheels are 300 MB: kept across runs, outside the repository (never in a build context by accident).
CACHE = Path(os.environ.get("FORGE_TEST_CACHE") or Path.home() / ".cache" / "forge-tests")
# The first test to ask for the image may build it: base, wheels and the image take minutes on 2 cores.
BUILD_TIMEOUT_S = 1200

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def engine_or_skip() -> DockerClient:
    import pytest

    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # no SDK, no socket, no permission: all mean "no engine here"
        pytest.skip(f"no Docker engine reachable ({type(exc).__name__}): set DOCKER_HOST or start dockerd")
    return client


def _digest(*parts: Path | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.relative_to(REPO).as_posix().encode() + b"\0" + part.read_bytes())
        else:
            h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def base_image() -> str:
    """The Debian base's tag: a hash of the recipe (runner_image/debian_base.py)."""
    return f"{BASE_REPOSITORY}:{_digest(REPO / 'runner_image' / 'debian_base.py')}"


def wheelhouse_dir() -> Path:
    docker_dir = REPO / "runner_image" / "docker"
    inputs = [
        REPO / "runner_image" / "wheelhouse.py",
        docker_dir / "requirements.txt",
        docker_dir / "versions.toml",
    ]
    return CACHE / f"wheelhouse-{_digest(*inputs)}"


def _runner_sources() -> list[Path]:
    files = [
        p for p in sorted((REPO / "runner_image").rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    ]
    files = [p for p in files if p.suffix != ".whl"]
    catalog = [REPO / "protos" / "forge" / n for n in ("__init__.py", "catalog.py", "catalog.yaml")]
    return [*files, *catalog, REPO / "forged" / "executors" / "image_build.py"]


def image_repository() -> str:
    """forge-runner-test-<hash of the base, the wheels, the Dockerfile and the runner>; the image is
    REPOSITORY:cpu."""
    return f"{TEST_REPOSITORY}-{_digest(base_image(), wheelhouse_dir().name, *_runner_sources())}"


def _ensure_base(client: DockerClient) -> str:
    import docker

    from runner_image.debian_base import make_base

    tag = base_image()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        make_base(tag)
    return tag


def _ensure_wheelhouse() -> Path:
    from runner_image.wheelhouse import make_wheelhouse

    dest = wheelhouse_dir()
    if dest.is_dir():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    # Filled aside and renamed: a run killed halfway leaves no half wheelhouse to be trusted next time.
    with tempfile.TemporaryDirectory(prefix="wheelhouse-", dir=CACHE) as tmp:
        make_wheelhouse(Path(tmp) / "wheels", torch_index_url=None)  # pip's own sources: CI's mirror
        with contextlib.suppress(OSError):  # another process got there first
            (Path(tmp) / "wheels").rename(dest)
    for old in CACHE.glob("wheelhouse-*"):
        if old != dest and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _remove_older(client: DockerClient, name: str, keep: str) -> None:
    """Remove the images named like `name` (repo-* too) but `keep`: earlier versions, 1 GB each and unused."""
    import docker

    for image in client.images.list(name=name):
        if keep not in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)


def offline_cpu_image(client: DockerClient) -> str:
    """The repository holding the CPU runner image (REPOSITORY:cpu) on this engine, building it first (and
    the base and wheels it needs) if this version is missing."""
    import docker

    repository = image_repository()
    tag = f"{repository}:cpu"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One build at a time: a test run that finds `.ci/run`'s early build under way waits for its image.
    with (CACHE / "image-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            _build(client, repository)
    return repository


def _build(client: DockerClient, repository: str) -> None:
    from forged.executors.docker import DockerExecutor

    tag = f"{repository}:cpu"
    started = time.monotonic()
    base = _ensure_base(client)
    wheels = _ensure_wheelhouse()
    prepared = time.monotonic()
    _, lines = DockerExecutor(client, repository=repository).build("cpu", base=base, wheelhouse=str(wheels))
    log = CACHE / "last-image-build.log"
    with log.open("w") as out:
        for line in lines:
            out.write(line + "\n")
    print(
        f"built {tag} in {time.monotonic() - started:.0f} s ({prepared - started:.0f} s of it for the base "
        f"and the wheels); the build's output is in {log}",
        file=sys.stderr,
    )
    _remove_older(client, BASE_REPOSITORY, base)
    _remove_older(client, f"{TEST_REPOSITORY}-*", tag)


if __name__ == "__main__":  # build it ahead of the tests: python tests/docker_support.py
    import docker

    print(offline_cpu_image(docker.from_env(timeout=600)))
