"""Forge's HF -> GGUF converter: `convert(hf_dir, out, out_type)`.

Memory stays at about one tensor whatever the model size: the tensor table is planned from the safetensors
headers alone, the GGUF header and table are written first, then each tensor is read from its memory map,
fixed up, encoded and written before the next is touched. The output appears only complete: it is written
to `<out>.partial`, fsynced and renamed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forged.export import gguf_arch, gguf_types
from forged.export.errors import ExportError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Source:
    hf_name: str
    gguf_name: str
    file: Path | None  # None: computed from the config (rope factors)
    shape: tuple[int, ...]
    type: gguf_types.TensorType


def convert(hf_dir: Path, out: Path, out_type: str = "f16", progress: Progress | None = None) -> Path:
    """Write `out` as a GGUF of the merged model in `hf_dir`; returns `out`.

    Raises ExportError (one line: what is wrong and what to do) for an unsupported architecture, tokenizer
    or output type; nothing is left at `out` or `out.partial` when it fails.
    """
    hf_dir, out = Path(hf_dir), Path(out)
    out_type = out_type.lower()
    say = progress or (lambda _msg: None)
    if out_type in gguf_types.K_QUANTS:
        from forged.export.kquant import convert_k_quant

        return convert_k_quant(hf_dir, out, out_type, say)
    if out_type not in gguf_types.NATIVE:
        known = ", ".join(gguf_types.NATIVE + gguf_types.K_QUANTS)
        raise ExportError(f"unknown GGUF output type {out_type!r}; choose one of: {known}")
    config = _read_config(hf_dir)
    plan = gguf_arch.plan(config)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(hf_dir, partial, plan, out_type, say)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {out_type})")
    return out


def sanitized_name(hf_dir: Path, config: dict[str, Any]) -> str:
    """general.name: a display name without paths, user names or control characters."""
    raw = str(config.get("_name_or_path") or hf_dir.name).rstrip("/")
    raw = raw.split("/")[-1] if raw.startswith(("/", ".", "~")) else raw
    clean = re.sub(r"[^A-Za-z0-9._+/ -]+", "-", raw).strip(" -")
    return clean[:96] or "forge-model"


def _read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def _weight_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [hf_dir / n for n in names]
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(
            f"{hf_dir} has no .safetensors weights; save the merged model with safe_serialization=True"
        )
    return files


def _plan_tensors(hf_dir: Path, plan: gguf_arch.ArchPlan, out_type: str) -> list[_Source]:
    import gguf
    from gguf.utility import SafetensorsLocal

    arch_enum = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == plan.arch)
    names = gguf.get_tensor_name_map(arch_enum, int(plan.config["num_hidden_layers"]))
    sources: list[_Source] = []
    for file in _weight_files(hf_dir):
        for hf_name, info in SafetensorsLocal(file).tensors.items():
            if plan.skips(hf_name):
                continue
            if info.dtype not in _READERS:
                raise ExportError(
                    f"tensor {hf_name} is {info.dtype}; Forge exports F32, F16 and BF16 weights"
                )
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(
                    f"tensor {hf_name} has no GGUF name for {plan.arch}; the checkpoint is not a plain "
                    f"{plan.arch} model (merge LoRA adapters before exporting)"
                )
            shape = tuple(info.shape)
            sources.append(
                _Source(hf_name, gguf_name, file, shape, gguf_types.choose(gguf_name, shape, out_type))
            )
    for gguf_name, data in plan.extra_tensors.items():
        shape = tuple(data.shape)
        sources.append(
            _Source(gguf_name, gguf_name, None, shape, gguf_types.choose(gguf_name, shape, out_type))
        )
    return sources


def _write(hf_dir: Path, path: Path, plan: gguf_arch.ArchPlan, out_type: str, say: Progress) -> None:
    import gguf

    from forged.export.gguf_vocab import add_tokenizer

    sources = _plan_tensors(hf_dir, plan, out_type)
    n_vocab = int(plan.config["vocab_size"])
    writer = gguf.GGUFWriter(path, plan.arch)
    try:
        writer.add_name(sanitized_name(hf_dir, plan.config))
        writer.add_file_type(gguf_types.file_type(out_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        plan.add_hparams(writer)
        add_tokenizer(writer, hf_dir, n_vocab)
        for s in sources:
            # the table is written before any data, so every tensor's size must be known from headers alone
            writer.add_tensor_info(
                s.gguf_name, s.shape, np.dtype(np.float32), s.type.nbytes, raw_dtype=s.type.ggml
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (s, data) in enumerate(zip(sources, _tensor_data(sources, plan), strict=True), 1):
            writer.write_tensor_data(gguf_types.encode(data, s.type))
            say(f"[{i}/{len(sources)}] {s.gguf_name} {gguf.GGMLQuantizationType(s.type.ggml).name}")
        assert writer.fout is not None
        for f in writer.fout:
            f.flush()
            os.fsync(f.fileno())
    finally:
        writer.close()


def _tensor_data(sources: list[_Source], plan: gguf_arch.ArchPlan) -> Iterator[np.ndarray]:
    """Each tensor as float32, fixed up for llama.cpp, one at a time (only the current one is in memory)."""
    from gguf.utility import SafetensorsLocal

    opened: dict[Path, dict[str, Any]] = {}
    for s in sources:
        if s.file is None:
            yield plan.extra_tensors[s.hf_name]
            continue
        if s.file not in opened:
            opened.clear()  # files are visited in order: drop the previous file's header table
            opened[s.file] = SafetensorsLocal(s.file).tensors
        info = opened[s.file][s.hf_name]
        raw = info.mmap_bytes()
        data = _READERS[info.dtype](raw).reshape(s.shape)
        del raw
        yield plan.fix(s.hf_name, data)


def _bf16(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32; numpy has no bf16 dtype
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


_READERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda raw: np.array(raw.view(np.float32)),
    "F16": lambda raw: raw.view(np.float16).astype(np.float32),
    "BF16": _bf16,
}
