"""Output types: which GGML type each tensor gets, and how its bytes are produced.

F32, F16, BF16, Q8_0 and Q4_0 are written natively with gguf's quantizers. K-quants are not: llama.cpp's
quantizer chooses per-tensor types with importance heuristics Forge should not re-implement, so those go
through llama.cpp itself (see kquant.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NATIVE = ("f16", "bf16", "f32", "q8_0", "q4_0")
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


@dataclass(frozen=True)
class TensorType:
    ggml: int  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # logical shape, numpy order
    nbytes: int


def file_type(out_type: str) -> int:
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[out_type]


def choose(gguf_name: str, shape: tuple[int, ...], out_type: str) -> TensorType:
    """The GGML type for one tensor: vectors stay F32 (llama.cpp needs norms and biases in F32)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    wanted = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[out_type]
    if len(shape) < 2 or gguf_name.startswith("rope_"):
        wanted = Q.F32
    elif out_type == "q4_0" and gguf_name in ("token_embd.weight", "output.weight"):
        # as llama.cpp's own Q4_0 does: the vocabulary projections carry most of the quantisation error
        wanted = Q.Q8_0
    block, type_size = gguf.GGML_QUANT_SIZES[wanted]
    if shape[-1] % block:
        wanted = Q.F16  # rows that do not fill whole blocks cannot be block-quantised
        block, type_size = gguf.GGML_QUANT_SIZES[wanted]
    n = int(np.prod(shape))
    return TensorType(ggml=int(wanted), shape=shape, nbytes=n // block * type_size)


def encode(data: np.ndarray, t: TensorType) -> np.ndarray:
    """float32 -> the bytes (or f16/f32 array) of type t, for GGUFWriter.write_tensor_data."""
    import gguf

    return gguf.quants.quantize(
        np.ascontiguousarray(data, dtype=np.float32), gguf.GGMLQuantizationType(t.ggml)
    )
