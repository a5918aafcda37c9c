"""K-quants (Q4_K_M and friends) through llama.cpp's own quantizer: Forge writes F16, llama.cpp quantizes.

The quantizer is llama.cpp's `llama-quantize` program on PATH, or the `llama-cpp-python` package's binding of
the same C function. The xllamacpp wheel used by the parity gate does not expose it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from forged.export.errors import ExportError

NEEDS_QUANTIZER = (
    "{t} needs llama.cpp's quantizer: install llama-cpp-python (pip install llama-cpp-python) or put "
    "llama.cpp's llama-quantize on PATH; or export as f16, bf16, q8_0 or q4_0, which Forge writes itself"
)


def quantizer_available() -> str | None:
    """'llama-quantize', 'llama-cpp-python', or None."""
    if shutil.which("llama-quantize"):
        return "llama-quantize"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    return "llama-cpp-python"


def convert_k_quant(hf_dir: Path, out: Path, out_type: str, say: Callable[[str], None]) -> Path:
    from forged.export.gguf_writer import convert

    tool = quantizer_available()
    if tool is None:
        raise ExportError(NEEDS_QUANTIZER.format(t=out_type.upper()))
    f16 = out.with_name(out.name + ".f16.partial")
    partial = out.with_name(out.name + ".partial")
    try:
        convert(hf_dir, f16, "f16", say)
        say(f"quantizing to {out_type.upper()} with {tool}")
        _quantize(tool, f16, partial, out_type)
        os.replace(partial, out)
    finally:
        f16.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return out


def _quantize(tool: str, src: Path, dst: Path, out_type: str) -> None:
    if tool == "llama-quantize":
        done = subprocess.run(
            ["llama-quantize", str(src), str(dst), out_type.upper()],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"llama-quantize failed ({out_type.upper()}): {last}")
        return
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{out_type.upper()}")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise ExportError(f"llama.cpp could not quantize to {out_type.upper()}")
