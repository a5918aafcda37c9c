"""Builds a runner image through the Docker engine's API, with no registry and no network when asked.

The build context is what runner_image/docker/Dockerfile.dockerignore lets through of forged's source
checkout, plus, for an offline build, the wheels of a wheelhouse on this machine in place of
runner_image/docker/wheelhouse/ (the Dockerfile then installs only those, under `network_mode=none`). The
build args are runner_image.image_versions' for the architecture, so this build and build.sh's are the same.
The engine's legacy builder is enough: Debian's docker.io has no BuildKit.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from forged.executors.base import ExecutorError, engine_message

if TYPE_CHECKING:
    from docker import DockerClient

DOCKERFILE = "runner_image/docker/Dockerfile"
DOCKERIGNORE = "runner_image/docker/Dockerfile.dockerignore"
WHEELHOUSE = "runner_image/docker/wheelhouse"  # where the Dockerfile looks for wheels
# A pip install of torch can print nothing for minutes: the stream must not time out meanwhile.
BUILD_TIMEOUT_S = 3600
# Where a base missing from this machine gets its one-line advice.
BASE_HINT = (
    "`docker pull` or `docker load` it, or build on a local base with --base "
    "(python -m runner_image.debian_base makes a Debian one for the cpu image)"
)


def wheelhouse_dir(path: str) -> Path | None:
    """The wheelhouse a request names ("" for none), checked: a folder on this machine holding wheels."""
    if not path:
        return None
    folder = Path(path)
    if not folder.is_absolute():
        raise ExecutorError(f"--wheelhouse {path}: give the folder's absolute path on forged's machine")
    if not folder.is_dir():
        raise ExecutorError(f"--wheelhouse {path} is not a folder on forged's machine")
    if not any(folder.glob("*.whl")):
        raise ExecutorError(
            f"--wheelhouse {path} holds no wheels: fill it with python -m runner_image.wheelhouse {path}"
        )
    return folder


def _context_files(source_root: Path) -> list[str]:
    from docker.utils.build import exclude_paths

    lines = (source_root / DOCKERIGNORE).read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    # The checkout's own wheels never count: a build is offline only with the wheelhouse it was given.
    return sorted(
        p
        for p in exclude_paths(str(source_root), patterns, dockerfile=DOCKERFILE)
        if not (p.startswith(WHEELHOUSE + "/") and p.endswith(".whl"))
    )


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_context(source_root: Path, wheelhouse: Path | None, out: IO[bytes]) -> None:
    """The build context as an uncompressed tar in `out` (compressing 300 MB of wheels costs more than
    sending them over a local socket)."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in _context_files(source_root):
            tar.add(source_root / rel, arcname=rel, recursive=False, filter=_owned_by_root)
        for wheel in sorted(wheelhouse.glob("*.whl")) if wheelhouse else []:
            tar.add(wheel, arcname=f"{WHEELHOUSE}/{wheel.name}", filter=_owned_by_root)


def ensure_base(client: DockerClient, base: str) -> Iterator[str]:
    """Nothing when `base` is on this machine; else pull it, as progress lines. A base that cannot be pulled
    is an ExecutorError raised at once, before any line: the engine refuses the pull request itself."""
    import docker
    import requests

    try:
        client.images.get(base)
        return iter(())
    except docker.errors.ImageNotFound:
        pass
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise ExecutorError(f"the Docker engine failed: {engine_message(exc)}") from exc
    repository, _, tag = base.rpartition(":") if ":" in base.split("/")[-1] else (base, "", "latest")
    try:
        events = client.api.pull(repository, tag=tag, stream=True, decode=True)
    except docker.errors.APIError as exc:
        raise ExecutorError(
            f"the base image {base} is not on this machine and cannot be pulled ({engine_message(exc)}): "
            + BASE_HINT
        ) from exc
    return _pull_lines(base, events)


def _pull_lines(base: str, events: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield f"pulling {base}"
    for event in events:
        if "error" in event:
            raise ExecutorError(f"pulling the base image {base} failed ({event['error']}): " + BASE_HINT)
        # Per-layer progress bars are noise in a log; the layer's state changes are not.
        if event.get("status") and "progress" not in event:
            yield " ".join(str(event[k]) for k in ("id", "status") if event.get(k))


def build(
    client: DockerClient,
    source_root: Path,
    tag: str,
    buildargs: dict[str, str],
    wheelhouse: Path | None,
) -> Iterator[str]:
    """Build runner_image/docker/Dockerfile as `tag`, yielding the builder's output line by line; with a
    wheelhouse the build has no network. Raises ExecutorError (the builder's own message) if it fails."""
    import docker
    import requests

    with tempfile.TemporaryFile(prefix="forge-build-context-") as context:
        write_context(source_root, wheelhouse, context)
        context.seek(0)
        try:
            events = client.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=DOCKERFILE,
                tag=tag,
                buildargs=buildargs,
                network_mode="none" if wheelhouse else None,
                rm=True,
                forcerm=True,  # no intermediate containers left behind by a failed step either
                decode=True,
                timeout=BUILD_TIMEOUT_S,
            )
            pending = ""
            for event in events:
                if "error" in event:
                    raise ExecutorError(f"building {tag} failed: {_clean(str(event['error']))}")
                pending += str(event.get("stream") or "")
                *complete, pending = pending.split("\n")
                yield from (line.rstrip("\r") for line in complete)
            if pending:
                yield pending
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # The engine refused the build, or went away (or stopped answering) in the middle of it.
            raise ExecutorError(f"building {tag} failed: {engine_message(exc)}") from exc


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(text: str) -> str:
    return _ANSI.sub("", text).strip().splitlines()[-1] if text.strip() else "no reason given"
