"""`python -m runner_image smoke` as forged will run it before a job: a real subprocess on this machine."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess

import pytest
import torch
from runner_testlib import REPO, runner_cmd, runner_env

from runner_image.image_versions import load_versions
from runner_image.smoke import EXIT_CANNOT_TRAIN, IMAGE_ARCH_ENV, has_kernels, no_kernels_reason

# What torch.cuda.get_arch_list() says in the CUDA 12.6 and 12.8 builds the images install.
CU126_ARCHES = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128_ARCHES = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


def _smoke(image_arch: str | None) -> subprocess.CompletedProcess[str]:
    env = runner_env()
    env.pop(IMAGE_ARCH_ENV, None)
    if image_arch:
        env[IMAGE_ARCH_ENV] = image_arch
    return subprocess.run(runner_cmd("smoke"), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer")
def test_smoke_on_a_cpu_machine_trains_on_the_cpu_and_says_so() -> None:
    proc = _smoke(None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, "stdout must hold the report and nothing else"
    report = json.loads(lines[0])
    assert report["ok"] is True and report["reason"] == ""
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] is False
    step = report["train_step"]
    assert step["ok"] is True and step["device"] == "cpu" and step["precision"] == "fp32"
    # A random-weight model over a 49k vocabulary starts near ln(vocab) ~ 10.8 nats; anything finite and
    # positive means the loss really was computed, and a non-zero gradient that backward really ran.
    assert math.isfinite(step["loss"]) and step["loss"] > 1.0
    assert step["grad_norm"] > 0 and step["trained_tokens"] > 0
    bnb_installed = importlib.util.find_spec("bitsandbytes") is not None
    assert (report["bitsandbytes"]["status"] == "missing") is (not bnb_installed)
    for optional in ("unsloth", "flash_attn"):
        assert report[optional]["status"] in ("missing", "skipped")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_image_that_cannot_use_a_gpu_refuses_in_one_line() -> None:
    # The classic mistake: the container was started without --gpus. Training a real model on the CPU of a
    # GPU image would silently take days, so smoke fails and says how to fix it.
    proc = _smoke("hopper")
    assert proc.returncode == EXIT_CANNOT_TRAIN
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    if torch.version.cuda:
        assert line.startswith("forge-runner smoke: this is the hopper image but no GPU is visible")
        assert "--gpus all" in line
    else:  # this machine's torch is a CPU build, which a GPU image must never hold
        cpu_build = f"a CPU-only build of torch {torch.__version__}"
        assert line == f"forge-runner smoke: the hopper image holds {cpu_build}: rebuild it"
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["image_arch"] == "hopper"
    assert "train_step" not in report


@pytest.mark.parametrize(
    ("capability", "arches", "expected"),
    [
        ((9, 0), CU126_ARCHES, True),
        ((8, 9), CU126_ARCHES, True),  # Ada runs sm_86 cubins: same major, higher minor
        ((12, 0), CU126_ARCHES, False),  # an RTX 5090 under a CUDA 12.6 build: the sm_120 problem
        ((12, 0), CU128_ARCHES, True),
        ((10, 3), CU128_ARCHES, True),  # B300 runs the sm_100 cubins
        ((6, 1), CU128_ARCHES, False),
        ((10, 0), ["sm_90a"], False),  # arch-specific cubins run on exactly that GPU
        ((9, 0), ["sm_90a"], True),
        ((12, 0), ["sm_80", "compute_80"], True),  # PTX: the driver compiles it for newer GPUs
        ((7, 5), ["sm_80", "compute_80"], False),
    ],
)
def test_kernels_for_a_gpu(capability: tuple[int, int], arches: list[str], expected: bool) -> None:
    assert has_kernels(capability, arches) is expected


def test_missing_kernels_name_the_image_that_has_them() -> None:
    table = load_versions()
    reason = no_kernels_reason((12, 0), CU126_ARCHES, "2.9.1+cu126", table)
    assert reason == (
        "torch 2.9.1+cu126 in this image has no kernels for sm_120 (it has sm_50 … sm_90): "
        "use the blackwell image (forge:blackwell)"
    )
    assert no_kernels_reason((6, 1), CU128_ARCHES, "2.9.1+cu128", table).endswith(
        "no runner image has them: use cpu"
    )


def test_smoke_does_not_need_the_daemon() -> None:
    # The image carries runner_image alone; smoke (like the runner) must work without forged installed.
    code = (
        "import sys, runner_image.smoke, runner_image.image_versions; "
        "sys.exit(any(m == 'forged' or m.startswith('forged.') for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([runner_cmd()[0], "-c", code], env=env, timeout=60).returncode == 0
