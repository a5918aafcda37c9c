"""ExportSpec's choices, shared by forgectl (its --quant choices) and forged (what it accepts)."""

from __future__ import annotations

# GGUF tensor types an export can write; f16 is lossless for 16-bit models and the default.
QUANTS: tuple[str, ...] = ("f16", "q8_0", "q4_0", "q4_k_m")
DEFAULT_QUANT = "f16"
