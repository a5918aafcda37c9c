"""Padding-free micro-batches: the examples of a micro-batch laid end to end in one row.

Padding to the longest example wastes compute on every pad token, in every layer, forward and backward; with
real, variable-length data that is often a third to a half of the batch. Instead the examples share one row,
position ids restart at 0 for each, and attention never crosses an example boundary: on CUDA a varlen
(FlashAttention) kernel reads the boundaries from `cu_seq_lens`, elsewhere transformers turns the restarting
position ids into a block-diagonal causal mask. Each token therefore sees exactly what it would see alone, so
the loss equals the padded batch's (tests/runner/test_runner_batching.py holds that to float tolerance) while
the work is only the real tokens'.

The micro-batch is still "these examples", chosen exactly as before, so data order, exact resume and
self-healing's micro-batch changes are untouched by packing.
"""

from __future__ import annotations

import torch

from runner_image.data import IGNORE_INDEX, Example

Batch = dict[str, torch.Tensor]


def pack(examples: list[Example]) -> Batch:
    """One row holding `examples` back to back, with the varlen metadata attention needs."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    lengths: list[int] = []
    for e in examples:
        n = len(e.input_ids)
        input_ids += e.input_ids
        # An example's first token is never a target: the token before it belongs to another example. In a
        # padded batch it sits at position 0, where nothing precedes it; here it must be masked explicitly, or
        # the previous example's last token would be trained to predict it.
        labels += [IGNORE_INDEX, *e.labels[1:n]]
        position_ids += range(n)
        lengths.append(n)
    cu_seq_lens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seq_lens[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([position_ids], dtype=torch.long),
        "cu_seq_lens": cu_seq_lens,
        "max_length": torch.tensor(max(lengths)),
    }


def model_inputs(batch: Batch, device: torch.device) -> dict[str, torch.Tensor | int]:
    """The keyword arguments for the model's forward, for a packed or a padded batch."""
    inputs: dict[str, torch.Tensor | int] = {"input_ids": batch["input_ids"].to(device)}
    if "position_ids" not in batch:
        inputs["attention_mask"] = batch["attention_mask"].to(device)
        return inputs
    # No attention mask: with restarting position ids that is what tells transformers the row is packed.
    # The cu_seq_lens/max_length names are transformers' own flash-attention kwargs, so a varlen kernel
    # (ours in runner_image/attention.py, or flash_attention_2 when installed) reads them as they are.
    cu = batch["cu_seq_lens"].to(device)
    max_length = int(batch["max_length"])
    inputs.update(
        position_ids=batch["position_ids"].to(device),
        cu_seq_lens_q=cu,
        cu_seq_lens_k=cu,
        max_length_q=max_length,
        max_length_k=max_length,
    )
    return inputs


def batch_tokens(batch: Batch) -> int:
    """Real (non-pad) tokens in a batch."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
