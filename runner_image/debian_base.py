"""A Debian base for the runner image on a machine that cannot pull one.

    python -m runner_image.debian_base [--tag forge-base/debian:bookworm] [--suite bookworm]

makes a minimal Debian root filesystem with python3 and python3-venv (mmdebstrap, which needs apt's
mirror but no registry and no chroot of its own) and `docker import`s it. Build the runner image on it with
`--base TAG` (docs/runner-images.md). Debian bookworm's python3 is 3.11, so its wheelhouse is cp311
(`python -m runner_image.wheelhouse --python-version 3.11`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_TAG = "forge-base/debian:bookworm"
DEFAULT_SUITE = "bookworm"
# Every Debian release's python3, for the wheelhouse that must match it.
PYTHON_OF_SUITE = {"bookworm": "3.11", "trixie": "3.13"}
PACKAGES = ("python3", "python3-venv")
# Documentation and translations nobody reads inside a container: a smaller base for every copy of it.
_EXCLUDED = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")


class BaseImageError(RuntimeError):
    """The base could not be made; the message says why and what to do."""


def mmdebstrap_command(suite: str, out: Path) -> list[str]:
    """The command that writes the root filesystem of `suite` as a tarball at `out` (no mirror given:
    mmdebstrap uses this machine's apt sources for its own release, else deb.debian.org)."""
    dpkg = [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDED]
    # Keep the copyright files: the licences travel with the packages.
    dpkg.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        *dpkg,
        suite,
        str(out),
    ]


def make_rootfs(suite: str, out: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise BaseImageError("mmdebstrap is not installed: apt-get install mmdebstrap (Debian, Ubuntu)")
    _run(mmdebstrap_command(suite, out), f"mmdebstrap could not make Debian {suite}")


def import_rootfs(rootfs: Path, tag: str) -> None:
    """`docker import` the tarball as `tag`, with python3 as what a bare `docker run` starts."""
    if shutil.which("docker") is None:
        raise BaseImageError("docker is not on PATH; install Docker to import the base image")
    _run(["docker", "import", "--change", 'CMD ["python3"]', str(rootfs), tag], "docker import failed")


def _run(cmd: list[str], failed: str) -> None:
    """Run `cmd`; if it fails, a BaseImageError of `failed` and the last line it wrote to stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise BaseImageError(f"{failed}: {last}")


def make_base(tag: str = DEFAULT_TAG, suite: str = DEFAULT_SUITE) -> None:
    if suite not in PYTHON_OF_SUITE:
        raise BaseImageError(f"unknown suite {suite!r}: choose one of {', '.join(PYTHON_OF_SUITE)}")
    with tempfile.TemporaryDirectory(prefix="forge-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        make_rootfs(suite, rootfs)
        import_rootfs(rootfs, tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner_image.debian_base",
        description="Make a Debian base image with python3 for the runner image, without a registry.",
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"the image to create (default {DEFAULT_TAG})")
    parser.add_argument("--suite", default=DEFAULT_SUITE, choices=sorted(PYTHON_OF_SUITE))
    args = parser.parse_args(argv)
    print(f"making Debian {args.suite} with {', '.join(PACKAGES)} as {args.tag} …", flush=True)
    try:
        make_base(args.tag, args.suite)
    except BaseImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.tag} (python {PYTHON_OF_SUITE[args.suite]}): build on it with --base {args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
