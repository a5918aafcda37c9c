"""Whether 4-bit (QLoRA) training can run where this runner runs: bitsandbytes installed and a CUDA GPU.

The runner refuses a qlora job on this answer before loading anything (quantization.require_support), and
forged asks the same question (`python -m runner_image qlora-check`, one JSON line) before it heals an
out-of-memory job with 4-bit weights, so on a machine that cannot run them that rung is skipped with its
reason instead of failing the job. Importing this module imports no torch: bitsandbytes is looked up first,
and torch only loaded when the answer still depends on the GPU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable


def missing(cuda: Callable[[], bool]) -> str:
    """What 4-bit training lacks here, in a few words; empty when nothing. `cuda`: whether the runner has a
    CUDA device, asked only if bitsandbytes is there."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return "" if cuda() else "no NVIDIA GPU"


def _torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main() -> int:
    """`qlora-check`: {"qlora": ""} when 4-bit training can run here, else {"qlora": "<what is missing>"}."""
    sys.stdout.write(json.dumps({"qlora": missing(_torch_sees_cuda)}) + "\n")
    sys.stdout.flush()
    return 0
