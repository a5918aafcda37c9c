"""The converter streams tensors in blocks and chunks, through lookup tables, kernel copies and row
reorderings; whatever the path, every tensor in the file must be the bytes gguf's own encoder gives for the
whole tensor decoded to float32 and fixed up, including NaNs, infinities, overflow and subnormals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forged.export import gguf_arch, gguf_types, gguf_writer

# float32 values that stress each encoder: NaN, infinities, beyond f16's range, f16 subnormals and
# underflow, signed zero
SPECIALS = np.array([np.nan, np.inf, -np.inf, 1e6, -7e4, 6e-8, -3e-6, 1e-40, -0.0], dtype=np.float32)


def _stored(hf_dir: Path, out: Path, dtype: str) -> Path:
    """hf_dir stored as `dtype`, with SPECIALS and a signalling NaN at the front of every matrix."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(hf_dir, out)
    as_torch = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    snan = {"bf16": 0x7F81, "f16": 0x7C01}[dtype]
    for file in out.glob("*.safetensors"):
        tensors = {name: t.to(as_torch) for name, t in load_file(str(file)).items()}
        for t in tensors.values():
            if t.ndim == 2:
                flat = t.view(-1)
                flat[: len(SPECIALS)] = torch.from_numpy(SPECIALS).to(as_torch)
                flat.view(torch.int16)[len(SPECIALS)] = snan
        save_file(tensors, str(file), metadata={"format": "pt"})
    return out


def _reference(hf_dir: Path, plan: gguf_arch.ArchPlan, hf_name: str, t: gguf_types.TensorType) -> bytes:
    """The whole tensor decoded to float32 independently of the converter, fixed, then gguf-encoded."""
    import torch
    from safetensors import safe_open

    with safe_open(str(hf_dir / "model.safetensors"), framework="pt") as f:
        stored = f.get_tensor(hf_name)
    bits = stored.view(torch.int16).numpy().view(np.uint16)
    if stored.dtype == torch.bfloat16:
        data = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        data = bits.view(np.float16).astype(np.float32)
    if plan.changes(hf_name):
        data = plan.fix(hf_name, data)
    with np.errstate(over="ignore", invalid="ignore"):
        return gguf_types.encode(data, t).tobytes()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NaN into Q8_0, as in the reference
@pytest.mark.parametrize("stored", ["bf16", "f16"])
def test_every_tensor_equals_the_whole_tensor_reference_encoding(
    stored: str, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf
    from safetensors import safe_open

    hf_dir = _stored(tiny_models["smollm"], tmp_path / stored, stored)
    # a few rows per block and per chunk, blocks that do not divide the rows: every boundary is crossed
    monkeypatch.setattr(gguf_writer, "_BLOCK_BYTES", 26000)
    monkeypatch.setattr(gguf_writer, "_CHUNK_BYTES", 10000)
    config = json.loads((hf_dir / "config.json").read_text())
    plan = gguf_arch.plan(config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config["num_hidden_layers"]))
    with safe_open(str(hf_dir / "model.safetensors"), framework="pt") as f:
        hf_names = list(f.keys())
    for out_type in ("f16", "bf16", "f32", "q8_0"):
        out = gguf_writer.convert(hf_dir, tmp_path / f"{stored}-{out_type}.gguf", out_type)
        written = {t.name: t for t in gguf.GGUFReader(out).tensors}
        for hf_name in hf_names:
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            got = written[gguf_name]
            t = gguf_types.choose(gguf_name, tuple(got.shape[::-1].tolist()), out_type)
            assert got.tensor_type == t.ggml, gguf_name
            assert np.asarray(got.data).tobytes() == _reference(hf_dir, plan, hf_name, t), (
                f"{out_type} {gguf_name} differs from the reference encoding"
            )
        assert len(written) >= len(hf_names) > 10
