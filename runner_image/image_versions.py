"""The runner images' versions table (runner_image/docker/versions.toml) and the `docker build` it implies.

One Dockerfile (runner_image/docker/Dockerfile) serves every architecture; a row of the table supplies its
build args, so building `hopper` means exactly one thing: that Dockerfile with the `hopper` row. The
Dockerfile's defaults are the `cpu` row, so even a plain `docker build` yields a correct (CPU) image.

    python -m runner_image.image_versions build ARCH [--tag TAG] [--base IMAGE] [--dry-run]

prints the command and runs it (runner_image/docker/build.sh is a wrapper). With wheels in
runner_image/docker/wheelhouse/ the build installs only those and runs with `--network none`. forged builds
the same way through the engine's API (forged/executors/image_build.py). Imports nothing heavy: no torch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from runner_image import RUNNER_PROTOCOL_VERSION

DOCKER_DIR = Path(__file__).resolve().parent / "docker"
VERSIONS_FILE = DOCKER_DIR / "versions.toml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
# The build context: the Dockerfile copies runner_image/ from the repository root.
BUILD_CONTEXT = DOCKER_DIR.parent.parent
IMAGE_REPOSITORY = "forge"
ARCHES = ("blackwell", "hopper", "ada", "ampere", "cpu")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# sm_100 and sm_120 kernels ship only in torch 2.7+ built against CUDA 12.8 or newer.
BLACKWELL_MIN_CUDA = (12, 8)
BLACKWELL_MIN_TORCH = (2, 7)

_VERSION = re.compile(r"^\d+(\.\d+)+$")
_CAPABILITY = re.compile(r"^\d+\.\d$")
_CUDA_BASE = re.compile(r"^nvidia/cuda:(?P<cuda>\d+\.\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+$")


class VersionsError(ValueError):
    """The table is unreadable or inconsistent, or an unknown architecture was asked for."""


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class ImageRow(BaseModel):
    """One architecture's image. `cuda` is absent for the CPU image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: str
    base_image: str
    cuda: str | None = None
    torch: str
    torch_index_url: str
    compute_capabilities: list[str]
    bitsandbytes: str | None = None
    flash_attn: str | None = None
    unsloth: str | None = None

    @field_validator("cuda", "torch", "bitsandbytes", "flash_attn", "unsloth")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.match(value):
            raise ValueError(f"{value!r} is not a version like 2.9.1")
        return value

    @field_validator("compute_capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not _CAPABILITY.match(cap):
                raise ValueError(f"{cap!r} is not a compute capability like 8.6")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImageRow:
        if self.cuda is None:
            if self.base_image.startswith("nvidia/cuda:"):
                raise ValueError("a row without `cuda` is the CPU image and cannot use an nvidia/cuda base")
            if self.torch_index_url != TORCH_INDEX + "cpu":
                raise ValueError(f"the CPU image must take torch from {TORCH_INDEX}cpu")
            if self.compute_capabilities or self.bitsandbytes:
                raise ValueError("the CPU image has no compute_capabilities and no bitsandbytes")
            return self
        base = _CUDA_BASE.match(self.base_image)
        if base is None:
            raise ValueError(
                f"base_image {self.base_image!r} is not an nvidia/cuda:<X.Y.Z>-cudnn-runtime-ubuntu<ver> tag"
            )
        if base["cuda"] != self.cuda:
            raise ValueError(f"base_image is CUDA {base['cuda']} but the row says cuda = {self.cuda}")
        wheel = TORCH_INDEX + "cu" + self.cuda.replace(".", "")
        if self.torch_index_url != wheel:
            raise ValueError(f"torch for CUDA {self.cuda} comes from {wheel}, not {self.torch_index_url}")
        if not self.compute_capabilities:
            raise ValueError("a GPU image needs compute_capabilities")
        newest = max(_numbers(cap) for cap in self.compute_capabilities)
        if newest[0] >= 10 and (
            _numbers(self.cuda) < BLACKWELL_MIN_CUDA or _numbers(self.torch)[:2] < BLACKWELL_MIN_TORCH
        ):
            raise ValueError(
                f"sm_{newest[0]}{newest[1]} needs CUDA >= 12.8 and torch >= 2.7 (this row: CUDA {self.cuda}, "
                f"torch {self.torch})"
            )
        return self

    @property
    def torch_cuda_arch_list(self) -> str:
        return ";".join(self.compute_capabilities)

    def extra_requirements(self) -> list[str]:
        """Pins installed on top of requirements.txt: the optional GPU packages this row switches on."""
        optional = {"bitsandbytes": self.bitsandbytes, "flash-attn": self.flash_attn, "unsloth": self.unsloth}
        return [f"{name}=={version}" for name, version in optional.items() if version]


class VersionsTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: dict[str, ImageRow]

    @model_validator(mode="after")
    def _every_arch_once(self) -> VersionsTable:
        if set(self.arch) != set(ARCHES):
            missing = sorted(set(ARCHES) - set(self.arch))
            unknown = sorted(set(self.arch) - set(ARCHES))
            raise ValueError(
                f"the table must have exactly {', '.join(ARCHES)} (missing {missing}, unknown {unknown})"
            )
        return self

    def row(self, arch: str) -> ImageRow:
        if arch not in self.arch:
            raise VersionsError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHES)}")
        return self.arch[arch]

    def arch_for_capability(self, major: int, minor: int) -> str | None:
        """The GPU image built for this compute capability, else one built for the same major version
        (cubins run on any later minor revision of their major), else None."""
        exact = f"{major}.{minor}"
        same_major = None
        for name, row in self.arch.items():
            if exact in row.compute_capabilities:
                return name
            if same_major is None and any(_numbers(c)[0] == major for c in row.compute_capabilities):
                same_major = name
        return same_major


def load_versions(path: Path = VERSIONS_FILE) -> VersionsTable:
    """Read and validate the table; every failure is a VersionsError that says what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VersionsError(f"cannot read {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise VersionsError(f"{path} is not valid TOML: {e}") from e
    try:
        return VersionsTable.model_validate(data)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise VersionsError(f"{path}: {where}") from e


def image_tag(arch: str) -> str:
    return f"{IMAGE_REPOSITORY}:{arch}"


def build_args(
    arch: str, table: VersionsTable, *, revision: str, created: str, version: str, base: str | None = None
) -> dict[str, str]:
    """Every ARG runner_image/docker/Dockerfile declares, with this architecture's values; `base` replaces
    the row's base image (one already on this machine, e.g. runner_image.debian_base's)."""
    row = table.row(arch)
    return {
        "BASE_IMAGE": base or row.base_image,
        "FORGE_ARCH": arch,
        "CUDA_VERSION": row.cuda or "none",
        "TORCH_VERSION": row.torch,
        "TORCH_INDEX_URL": row.torch_index_url,
        "TORCH_CUDA_ARCH_LIST": row.torch_cuda_arch_list,
        "EXTRA_REQUIREMENTS": " ".join(row.extra_requirements()),
        "RUNNER_PROTOCOL": str(RUNNER_PROTOCOL_VERSION),
        "FORGE_VERSION": version,
        "REVISION": revision,
        "CREATED": created,
    }


def build_command(
    arch: str,
    table: VersionsTable,
    *,
    tag: str | None = None,
    revision: str = "unknown",
    created: str = "unknown",
    version: str = "unknown",
    base: str | None = None,
    offline: bool = False,
) -> list[str]:
    """The exact `docker build` argv, to be run from BUILD_CONTEXT (the repository root). `offline`: from the
    wheels in runner_image/docker/wheelhouse/, with no network."""
    args = build_args(arch, table, revision=revision, created=created, version=version, base=base)
    cmd = ["docker", "build", "-f", str(DOCKERFILE.relative_to(BUILD_CONTEXT)), "-t", tag or image_tag(arch)]
    if offline:
        cmd += ["--network", "none"]
    for name, value in args.items():
        cmd += ["--build-arg", f"{name}={value}"]
    return [*cmd, "."]


def provenance() -> dict[str, str]:
    """The per-build values of build_command and build_args: this checkout's commit, now, forge's version."""
    return {
        "revision": _git_revision(),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": _forge_version(),
    }


def has_wheels() -> bool:
    """Whether runner_image/docker/wheelhouse/ holds wheels, which make the build offline."""
    return any((DOCKER_DIR / "wheelhouse").glob("*.whl"))


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=BUILD_CONTEXT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _forge_version() -> str:
    try:
        return metadata.version("forge-llm")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="runner_image/docker/build.sh", description="Build the runner image for one GPU architecture."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="print the docker build command for ARCH and run it")
    build.add_argument("arch", metavar="ARCH", help=f"one of {', '.join(ARCHES)}")
    build.add_argument("--tag", help="image tag (default forge:ARCH)")
    build.add_argument("--base", help="build on this local image instead of the row's base_image")
    build.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    args = parser.parse_args(argv)
    try:
        table = load_versions()
        cmd = build_command(
            args.arch, table, tag=args.tag, base=args.base, offline=has_wheels(), **provenance()
        )
    except VersionsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    if shutil.which("docker") is None:
        print("error: docker is not on PATH; install Docker to build images", file=sys.stderr)
        return 2
    # BuildKit reads Dockerfile.dockerignore; the legacy builder would ignore it and send the whole repository
    # (virtualenv included) as the build context.
    return subprocess.call(cmd, cwd=BUILD_CONTEXT, env={**os.environ, "DOCKER_BUILDKIT": "1"})


if __name__ == "__main__":
    sys.exit(main())
