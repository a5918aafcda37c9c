"""A folder of wheels from which the runner image builds with no network.

    python -m runner_image.wheelhouse DIR [--arch cpu] [--python-version 3.11] [--pip-sources]

downloads (`pip download`, binary wheels only) the torch of the architecture's row in
runner_image/docker/versions.toml and everything in runner_image/docker/requirements.txt, for the image's
Python rather than this one. torch comes from the row's index, as in an online build; --pip-sources takes it
from pip's own configuration instead (a local mirror or --find-links). Pass DIR to the build as
`forgectl docker build --wheelhouse DIR`, or fill runner_image/docker/wheelhouse/ with it for build.sh.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

from runner_image.debian_base import DEFAULT_SUITE, PYTHON_OF_SUITE
from runner_image.image_versions import ARCHES, DOCKER_DIR, VersionsError, load_versions

REQUIREMENTS = DOCKER_DIR / "requirements.txt"
DEFAULT_PYTHON = PYTHON_OF_SUITE[DEFAULT_SUITE]  # the python3 of runner_image.debian_base's default base


class WheelhouseError(RuntimeError):
    """The wheels could not be downloaded; the message says why."""


def _platforms(machine: str) -> list[str]:
    """The wheel platform tags a glibc 2.28+ image on this CPU runs (pip does not widen --platform itself)."""
    manylinux = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    return [*manylinux, f"manylinux2014_{machine}", f"linux_{machine}"]


def torch_requirement(arch: str, torch: str) -> str:
    # The CPU build carries the +cpu local version; naming it keeps pip from ever taking PyPI's CUDA build
    # (2 GB of nvidia-* wheels) for the cpu image.
    return f"torch=={torch}+cpu" if arch == "cpu" else f"torch=={torch}"


def download_commands(
    dest: Path, arch: str, python_version: str, torch_index_url: str | None, machine: str
) -> list[list[str]]:
    """The `pip download` runs: torch (from its own index unless None), then the requirements held to it."""
    row = load_versions().row(arch)
    target = [
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *(arg for tag in _platforms(machine) for arg in ("--platform", tag)),
        "--dest",
        str(dest),
    ]
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", *target]
    torch_from = ["--index-url", torch_index_url] if torch_index_url else []
    extras = row.extra_requirements()
    return [
        [*pip, *torch_from, "--no-deps", torch_requirement(arch, row.torch)],
        # torch's own dependencies come from the main index with the rest.
        [*pip, f"torch=={row.torch}", "-r", str(REQUIREMENTS), *extras],
    ]


def make_wheelhouse(
    dest: Path,
    arch: str = "cpu",
    python_version: str = DEFAULT_PYTHON,
    torch_index_url: str | None = "",
    machine: str = "",
) -> None:
    """Fill `dest` (created if missing). torch_index_url "": the row's index; None: pip's configuration."""
    row = load_versions().row(arch)
    index = row.torch_index_url if torch_index_url == "" else torch_index_url
    dest.mkdir(parents=True, exist_ok=True)
    for cmd in download_commands(dest, arch, python_version, index, machine or platform.machine()):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or [
                f"exit status {proc.returncode}"
            ]
            raise WheelhouseError(f"pip download failed: {errors[0].removeprefix('ERROR: ')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner_image.wheelhouse",
        description="Download the wheels the runner image installs, so that it builds with no network.",
    )
    parser.add_argument("dest", metavar="DIR", type=Path, help="folder for the wheels (created if missing)")
    parser.add_argument("--arch", default="cpu", choices=ARCHES)
    parser.add_argument(
        "--python-version",
        default=DEFAULT_PYTHON,
        help=f"the base image's python3 (default {DEFAULT_PYTHON}: Debian bookworm)",
    )
    parser.add_argument(
        "--pip-sources",
        action="store_true",
        help="take torch from pip's configured indexes and find-links, not the versions table's index",
    )
    args = parser.parse_args(argv)
    try:
        make_wheelhouse(args.dest, args.arch, args.python_version, None if args.pip_sources else "")
    except (VersionsError, WheelhouseError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    count = len(list(args.dest.glob("*.whl")))
    print(f"{count} wheels in {args.dest}: build offline with --wheelhouse {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
