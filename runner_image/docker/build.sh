#!/usr/bin/env bash
# Build the runner image for one GPU architecture, with the values runner_image/docker/versions.toml gives it:
#
#   runner_image/docker/build.sh ARCH [--tag TAG] [--base IMAGE] [--dry-run]   ARCH: blackwell, hopper, ada, ampere, cpu
#
# Prints the exact `docker build` command, then runs it from the repository root (--dry-run: only prints).
# Offline (no registry, no index): --base a local image (python -m runner_image.debian_base makes one) and
# wheels in runner_image/docker/wheelhouse/ (python -m runner_image.wheelhouse fills it); the build then runs
# with --network none. `forgectl docker build` does the same through forged.
# Needs a Python with pydantic: the repository's .venv if there is one, else $PYTHON, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m runner_image.image_versions build "$@"
