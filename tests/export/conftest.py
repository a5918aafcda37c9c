"""Tiny models of every seed family, saved once per session, and helpers to convert and gate them.

The tiny models are random weights at real architectures with real tokenizers and chat templates. Random
weights give near-uniform next-token distributions, where float rounding alone could flip a greedy choice;
runner_image.tiny scales each model's final norm so its logits spread over several nats (see FINAL_NORM_WEIGHT
there), which makes the greedy continuation a stable property of the weights that the gate can compare.
Random attention is near-uniform too (q.k ~ 0.05 at init), and then the rope layout hardly matters: a llama
file without the q/k permutation differed from HF by only 0.05 nats. Scaling q and k by QK_SCALE makes
attention position-sensitive, as in a trained model: the same wrong file then differs by 0.7-1.3 nats while
a correct F16 file stays within 0.005.
"""

from __future__ import annotations

from pathlib import Path

import pytest

QK_SCALE = 4.0


def save_family(out: Path, family: str) -> Path:
    from runner_image.tiny import save_tiny

    return save_tiny(out, family)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> HF directory, built lazily (gemma's 256k-row embedding is not free)."""
    root = tmp_path_factory.mktemp("tiny-families")
    return _LazyDirs(root)


class _LazyDirs(dict[str, Path]):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        self[family] = sharpen_attention(save_family(self.root / family, family))
        return self[family]


def sharpen_attention(hf_dir: Path) -> Path:
    from safetensors.numpy import load_file, save_file

    for file in hf_dir.glob("*.safetensors"):
        tensors = load_file(str(file))
        for name in tensors:
            if any(part in name for part in ("q_proj", "k_proj", "qkv_proj")):
                tensors[name] = tensors[name] * QK_SCALE
        save_file(tensors, str(file), metadata={"format": "pt"})
    return hf_dir
