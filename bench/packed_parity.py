"""Packed (padding-free) batches give the padded batch's loss and gradients, on this machine's kernel.

    python bench/packed_parity.py

On CUDA this checks the varlen kernel (runner_image/attention.py) against padded sdpa in bf16, which CI
cannot run; the CPU path is covered by tests/runner/test_runner_batching.py. Prints the largest differences
and exits non-zero past the tolerance (bf16 keeps ~3 significant digits, so 2e-2 relative on a summed loss).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner_image import attention
from runner_image.batching import pack
from runner_image.data import collate, ensure_pad_token, tokenize_example
from runner_image.precision import pick_device
from runner_image.tiny import build_tiny_model, load_tiny_tokenizer
from runner_image.train import forward_loss

TOLERANCE = 2e-2


def loss_and_grads(model, batch, device, amp) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss, _ = forward_loss(model, batch, device, amp)
    loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), grads


def main() -> int:
    precision = pick_device()
    device, amp = precision.device, precision.amp_dtype
    tok = load_tiny_tokenizer()
    ensure_pad_token(tok)
    convs = [
        [{"role": "user", "content": "word " * k}, {"role": "assistant", "content": "reply " * (3 * k + 1)}]
        for k in (1, 9, 4, 30, 2, 17)
    ]
    examples = [tokenize_example(tok, c, 512)[0] for c in convs]
    base = build_tiny_model(tok)
    # init_lora_weights=False: a non-zero B, so the LoRA path changes the output and gets real gradients.
    targets = ["q_proj", "v_proj", "down_proj"]
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(base, lora).to(device)

    attention.set_attention(model.base_model.model, "sdpa")
    padded_loss, padded_grads = loss_and_grads(model, collate(examples, tok.pad_token_id), device, amp)
    kernel = attention.choose(model.base_model.model, device)
    packed_loss, packed_grads = loss_and_grads(model, pack(examples), device, amp)

    loss_err = abs(packed_loss - padded_loss) / abs(padded_loss)
    grad_err = float((packed_grads - padded_grads).norm() / padded_grads.norm())
    print(f"device {device.type}, kernel {kernel}, autocast {amp}")
    print(f"loss padded {padded_loss:.4f} packed {packed_loss:.4f}: relative difference {loss_err:.2e}")
    print(f"LoRA gradients: relative difference {grad_err:.2e} (norm {float(padded_grads.norm()):.3e})")
    ok = loss_err < TOLERANCE and grad_err < TOLERANCE
    print("PASS" if ok else f"FAIL: over {TOLERANCE}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
