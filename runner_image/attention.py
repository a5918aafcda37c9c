"""Which attention kernel trains a packed row (see batching.py) on this machine.

In order of preference:
- `flash_attention_2` when the flash-attn package is installed (CUDA images that ship it): transformers'
  own varlen path, which also handles Gemma 2's logit soft-capping and sliding windows.
- `forge_varlen` on CUDA otherwise: PyTorch's built-in FlashAttention varlen kernel
  (`torch.nn.attention.varlen`, torch >= 2.10), registered here with transformers' AttentionInterface, so no
  extra package has to be compiled into the image.
- `sdpa` everywhere else (CPU, old torch): transformers builds a block-diagonal causal mask from the
  restarting position ids. Correct, but attention then costs (sum of lengths)^2 instead of the sum of
  squares, which is fine at the sequence lengths a CPU trains. Soft-capped models (Gemma 2) get `eager`
  with the same mask, since sdpa cannot soft-cap.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

VARLEN = "forge_varlen"


@functools.cache
def _torch_varlen() -> tuple[Any, frozenset[str]] | None:
    """The kernel and the keywords this torch version of it takes, looked up once rather than per layer."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _varlen_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    kernel = _torch_varlen()
    cu = kwargs.get("cu_seq_lens_q")
    if kernel is None or cu is None or query.shape[0] != 1:
        raise RuntimeError("forge_varlen attention needs a packed row (batch of 1) with cu_seq_lens_q")
    if softcap:
        raise RuntimeError("forge_varlen attention cannot soft-cap logits; use sdpa for this model")
    max_length = int(kwargs["max_length_q"])
    # transformers hands over [batch, heads, tokens, head_dim]; the kernel takes [tokens, heads, head_dim].
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    if q.dtype not in (torch.float16, torch.bfloat16):
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    varlen_attn, params = kernel
    kw: dict[str, Any] = {}
    if "scale" in params:
        kw["scale"] = scaling
    elif scaling is not None:
        # Early versions of the kernel always scale by 1/sqrt(head_dim); fold any other scale into q.
        q = q * (scaling * q.shape[-1] ** 0.5)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    window = sliding_window if sliding_window and sliding_window < max_length else None
    if "window_size" in params:
        kw["window_size"] = (window - 1, 0) if window else (-1, 0)
    elif window:
        raise RuntimeError("this torch's varlen attention has no sliding window; use sdpa for this model")
    else:
        kw["is_causal"] = True
    out = varlen_attn(q, k, v, cu, cu, max_length, max_length, **kw)
    return out.unsqueeze(0), None  # [1, tokens, heads, head_dim], as every attention function returns


def _register() -> None:
    AttentionInterface.register(VARLEN, _varlen_forward)
    # No mask at all: the kernel reads the example boundaries from cu_seq_lens.
    AttentionMaskInterface.register(VARLEN, lambda *args, **kwargs: None)


def choose(model: PreTrainedModel, device: torch.device) -> str:
    """Pick and set the attention implementation for packed training; returns its name."""
    softcapped = bool(getattr(model.config, "attn_logit_softcapping", None))
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        name = "flash_attention_2"
    elif device.type == "cuda" and _torch_varlen() is not None and not softcapped:
        _register()
        name = VARLEN
    elif softcapped:
        # sdpa cannot soft-cap attention logits (Gemma 2); eager can, with the same block-diagonal mask.
        name = "eager"
    else:
        name = "sdpa"
    set_attention(model, name)
    return name


def set_attention(model: PreTrainedModel, name: str) -> None:
    if name == VARLEN:
        _register()
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError, AttributeError):
        # Older transformers validate against a fixed list; every attention module reads the config anyway.
        model.config._attn_implementation = name
