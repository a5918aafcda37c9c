"""A real Docker engine for tests, and the CPU runner image built without a registry.

Images cannot be pulled here and `docker build` of runner_image/docker/Dockerfile needs PyPI and PyTorch's
wheel index. So the CPU image is assembled from this machine instead and `docker import`ed: the interpreter
running the tests, exactly the distributions runner_image/docker/requirements.txt (plus torch) pulls in, the
shared libraries they link, and runner_image itself, with the same runtime contract as the Dockerfile (the
`forge` user, offline environment, `forge.*` labels). The tag carries a hash of all of that, so the image is
built once per machine and rebuilt when the runner or its packages change.

The engine is whatever DOCKER_HOST (else /var/run/docker.sock) points at; with none, the tests that need it
skip and say so. `.ci/run` starts one with vfs storage and no bridge.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

if TYPE_CHECKING:
    from docker import DockerClient

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "runner_image" / "docker" / "requirements.txt"
TEST_REPOSITORY = "forge-test"  # the executor's --docker-repository in tests: <this>-<hash>:cpu
# Inside the image: the interpreter's prefix (the runner's packages in its site-packages).
PREFIX = "/opt/python"
# Parts of the interpreter and of torch a runner never loads: 200 MB less for every vfs copy.
_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "include"}


def engine_or_skip() -> DockerClient:
    import pytest

    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # no SDK, no socket, no permission: all mean "no engine here"
        pytest.skip(f"no Docker engine reachable ({type(exc).__name__}): set DOCKER_HOST or start dockerd")
    return client


def _closure() -> list[md.Distribution]:
    names = [Requirement(line).name for line in _requirement_lines()] + ["torch"]
    seen: dict[str, md.Distribution] = {}
    while names:
        name = names.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = md.distribution(name)
        seen[key] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                names.append(req.name)
    return [seen[k] for k in sorted(seen)]


def _requirement_lines() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def _runner_sources() -> list[Path]:
    roots = [REPO / "runner_image"]
    files = [
        p for root in roots for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
    ]
    return files + [REPO / "protos" / "forge" / n for n in ("__init__.py", "catalog.py", "catalog.yaml")]


def image_repository() -> str:
    """forge-test-<hash of the runner, its packages and this builder>; the image is REPOSITORY:cpu."""
    h = hashlib.sha256()
    for dist in _closure():
        h.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    for path in [*_runner_sources(), Path(__file__)]:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(sys.version.encode())
    return f"{TEST_REPOSITORY}-{h.hexdigest()[:12]}"


def _interpreter_files() -> Iterator[tuple[Path, str]]:
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    yield Path(sys.executable).resolve(), f"{PREFIX}/bin/{version}"
    for lib in sorted((base / "lib").glob("libpython*.so*")):
        yield lib, f"{PREFIX}/lib/{lib.name}"
    stdlib = base / "lib" / version
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if path.is_dir() or rel.parts[0] == "site-packages" or _SKIP_DIRS & set(rel.parts[:1]):
            continue
        yield path, f"{PREFIX}/lib/{version}/{rel.as_posix()}"


def _package_files() -> Iterator[tuple[Path, str]]:
    site = f"{PREFIX}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    for dist in _closure():
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f))).resolve()
            rel = Path(f)
            if rel.parts[0] == ".." or not src.is_file() or _SKIP_DIRS & set(rel.parts[1:2]):
                continue
            yield src, f"{site}/{rel.as_posix()}"
    for src in _runner_sources():
        rel = src.relative_to(REPO)
        dest = f"/opt/forge/{rel.as_posix()}"
        if rel.parts[0] == "protos":
            dest = f"/opt/forge/forge/{src.name}"
        yield src, dest


def _elf_dependencies(files: Iterable[Path]) -> set[Path]:
    """The system libraries (and the loader) these binaries need, as ldd resolves them on this machine."""
    candidates = [str(p) for p in files if ".so" in p.name or os.access(p, os.X_OK)]
    found: set[Path] = set()
    for i in range(0, len(candidates), 200):
        out = subprocess.run(["ldd", *candidates[i : i + 200]], capture_output=True, text=True).stdout
        for match in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            found.add(Path(match.group(1)))
    return found


def _entries() -> list[tuple[Path, str]]:
    entries = list(_interpreter_files()) + list(_package_files())
    ours = {src for src, _ in entries}
    for lib in sorted(_elf_dependencies(ours)):
        if lib in ours or str(lib).startswith((sys.base_prefix, sys.prefix)):
            continue
        entries.append((lib.resolve(), str(lib)))
    return entries


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _write_rootfs(path: Path) -> None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    with tarfile.open(path, "w") as tar:
        for d in ("/tmp", "/workspace", "/etc", "/dev", "/proc", "/sys"):
            _add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        _add_bytes(
            tar, "/etc/passwd", b"root:x:0:0:root:/root:/bin/false\nforge:x:10001:10001::/tmp:/bin/false\n"
        )
        _add_bytes(tar, "/etc/group", b"root:x:0:\nforge:x:10001:\n")
        entries = _entries()
        # Every folder explicitly and world-readable: the engine would create missing parents mode 0600.
        parents = {str(p) for _, dest in entries for p in Path(dest).parents} - {"/"}
        for folder in sorted(parents):
            _add_dir(tar, folder)
        seen: set[str] = set()
        for src, dest in entries:
            if dest in seen:
                continue
            seen.add(dest)
            info = tar.gettarinfo(str(src), arcname=dest.lstrip("/"))
            # Readable by the unprivileged runner whatever the host's umask; no host ownership leaks in.
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with src.open("rb") as fh:
                tar.addfile(info, fh)
        link = tarfile.TarInfo("opt/python/bin/python")
        link.type, link.linkname = tarfile.SYMTYPE, version
        tar.addfile(link)


def _changes() -> list[str]:
    """The Dockerfile's runtime contract, as `docker import --change` instructions."""
    sys.path.insert(0, str(REPO))
    from runner_image import RUNNER_PROTOCOL_VERSION
    from runner_image.image_versions import load_versions

    row = load_versions().row("cpu")
    env = {
        "PATH": f"{PREFIX}/bin:/usr/bin:/bin",
        "LD_LIBRARY_PATH": f"{PREFIX}/lib",
        "PYTHONPATH": "/opt/forge",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": "/tmp/hf",
        "TOKENIZERS_PARALLELISM": "false",
        "FORGE_IMAGE_ARCH": "cpu",
    }
    labels = {
        "forge.arch": "cpu",
        "forge.torch": md.version("torch"),
        "forge.cuda": "none",
        "forge.runner-protocol": str(RUNNER_PROTOCOL_VERSION),
        "forge.built-by": "tests/docker_support.py (offline stand-in for build.sh cpu, torch per the host)",
        "org.opencontainers.image.base.name": row.base_image,
    }
    return [
        *(f"ENV {k}={v}" for k, v in env.items()),
        *(f'LABEL {k}="{v}"' for k, v in labels.items()),
        "USER forge",
        "WORKDIR /workspace",
        'ENTRYPOINT ["python", "-m", "runner_image"]',
        'CMD ["smoke"]',
    ]


def offline_cpu_image(client: DockerClient) -> str:
    """The repository holding the CPU runner image (REPOSITORY:cpu) on this engine, importing it first if
    this version is missing."""
    import docker

    repository = image_repository()
    tag = f"{repository}:cpu"
    try:
        client.images.get(tag)
        return repository
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="forge-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _write_rootfs(rootfs)
        client.api.import_image_from_file(str(rootfs), repository=repository, tag="cpu", changes=_changes())
    # Earlier versions are 1.3 GB each and nothing uses them any more.
    for image in client.images.list(name=f"{TEST_REPOSITORY}-*"):
        if tag not in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
    return repository


if __name__ == "__main__":  # build it ahead of the tests: python tests/docker_support.py
    import docker

    print(offline_cpu_image(docker.from_env(timeout=600)))
