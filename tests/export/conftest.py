"""Tiny models of every seed family, saved once per session, and helpers to convert and gate them.

The tiny models are random weights at real architectures with real tokenizers and chat templates. Random
weights give near-uniform next-token distributions, where float rounding alone could flip a greedy choice;
runner_image.tiny scales each model's final norm so its logits spread over several nats (see FINAL_NORM_WEIGHT
there), which makes the greedy continuation a stable property of the weights that the gate can compare.
"""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # the per-family builders arrive with the catalog branch; until then only the original `tiny` exists
    from runner_image.tiny import FAMILIES
except ImportError:
    FAMILIES = ("smollm",)

# A short validation-style chat: plain words, digits, punctuation, newlines, non-ASCII; the gate cuts it
# before the assistant turn.
PROMPTS = [
    [
        {"role": "user", "content": "List 1, 2, 3 and 42 apples.\n\n  Then say  Ünïcødé ✓ 日本語?"},
        {"role": "assistant", "content": "Apples."},
    ]
]


def save_family(out: Path, family: str) -> Path:
    from runner_image.tiny import save_tiny

    if family == "smollm":
        return save_tiny(out)
    return save_tiny(out, family)  # type: ignore[call-arg]


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
        self[family] = save_family(self.root / family, family)
        return self[family]
