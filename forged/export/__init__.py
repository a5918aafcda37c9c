"""Export a merged Hugging Face model to GGUF and check it against the original in real llama.cpp.

Nothing here imports torch, transformers or llama.cpp at import time: forged loads this package, and the
heavy work runs inside the functions (in the export job's own process).
"""
