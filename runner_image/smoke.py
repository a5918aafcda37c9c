"""`forge-runner smoke`: can this image train on the hardware it runs on? forged asks before a real job.

Prints one JSON object (the report) on stdout and exits 0 when it can. When it cannot, the report's `reason`
says why in one line, the same line goes to stderr, and the exit status is EXIT_CANNOT_TRAIN. The decisive
check is real: one LoRA forward and backward of the built-in tiny model through the runner's own training
code, on the GPU when there is one. Around it: whether this torch build has kernels for the GPU (an sm_120
card under a CUDA 12.6 build has none), and the optional GPU packages (bitsandbytes, unsloth, flash-attn).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from runner_image import RUNNER_PROTOCOL_VERSION
from runner_image.image_versions import VersionsError, VersionsTable, image_tag, load_versions

# Distinct from the protocol's exit codes: "this image cannot train here" is neither bad input nor a crash.
EXIT_CANNOT_TRAIN = 3
# Set by runner_image/docker/Dockerfile; absent when the runner runs from a checkout or a virtualenv.
IMAGE_ARCH_ENV = "FORGE_IMAGE_ARCH"

_SMOKE_CHAT = [
    {"role": "user", "content": "Is this machine able to train?"},
    {"role": "assistant", "content": "Yes: the forward and backward pass ran."},
]


def _arch_numbers(arch: str) -> tuple[str, int] | None:
    """('sm', 90) for 'sm_90', ('sm_exact', 90) for 'sm_90a', ('compute', 90) for 'compute_90'."""
    kind, _, number = arch.partition("_")
    digits = number.rstrip("abcdefghijklmnopqrstuvwxyz")
    if kind not in ("sm", "compute") or not digits.isdigit():
        return None
    # Arch-specific cubins (sm_90a, sm_100a) run only on exactly that GPU.
    return ("sm_exact" if kind == "sm" and digits != number else kind), int(digits)


def has_kernels(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch built for `arch_list` (torch.cuda.get_arch_list()) can run on a GPU of `capability`.

    A cubin for sm_XY runs on sm_XZ for Z >= Y (same major); PTX for compute_XY is compiled by the driver for
    any GPU of capability >= X.Y.
    """
    major, minor = capability
    device = major * 10 + minor
    for arch in arch_list:
        parsed = _arch_numbers(arch)
        if parsed is None:
            continue
        kind, number = parsed
        if kind == "sm_exact" and number == device:
            return True
        if kind == "sm" and number // 10 == major and number % 10 <= minor:
            return True
        if kind == "compute" and number <= device:
            return True
    return False


def no_kernels_reason(
    capability: tuple[int, int], arch_list: list[str], torch_version: str, table: VersionsTable | None
) -> str:
    sm = f"sm_{capability[0]}{capability[1]}"
    has = f"{arch_list[0]} … {arch_list[-1]}" if arch_list else "none"
    fitting = table.arch_for_capability(*capability) if table is not None else None
    fix = (
        f"use the {fitting} image ({image_tag(fitting)})" if fitting else "no runner image has them: use cpu"
    )
    return f"torch {torch_version} in this image has no kernels for {sm} (it has {has}): {fix}"


def _quietly(fn: Callable[[], Any]) -> Any:
    # Some packages print banners on import; stdout must carry nothing but the report.
    with contextlib.redirect_stdout(sys.stderr):
        return fn()


def probe_package(
    module: str, distribution: str, *, load: bool = True, gpu_check: Callable[[Any], None] | None = None
) -> dict:
    """{"status": "ok"|"missing"|"failed"|"skipped", "version"?, "reason"?} for an optional package."""
    if importlib.util.find_spec(module) is None:
        return {"status": "missing"}
    if not load:
        return {"status": "skipped", "reason": "installed; importing it needs a usable GPU"}
    try:
        mod = _quietly(lambda: importlib.import_module(module))
        if gpu_check is not None:
            _quietly(lambda: gpu_check(mod))
    except Exception as e:  # any failure to load is the answer, not a crash of the smoke test
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(mod, "__version__", None)
    return {"status": "ok", "version": version}


def _bitsandbytes_on_gpu(bnb: Any) -> None:
    # Importing succeeds even when its native library for this CUDA is missing (it only warns), so quantize
    # and restore a tensor on the GPU: the operation QLoRA depends on.
    import torch

    weights = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
    packed, state = bnb.functional.quantize_4bit(weights, quant_type="nf4")
    restored = bnb.functional.dequantize_4bit(packed, state)
    error = float((restored - weights).abs().mean() / weights.abs().mean())
    if not math.isfinite(error) or error > 0.25:
        raise RuntimeError("4-bit quantize/dequantize on the GPU gave wrong values")


def train_step() -> dict:
    """One LoRA forward and backward of the tiny model, as the runner trains (same device, dtype, loss)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from runner_image import attention
    from runner_image.batching import pack
    from runner_image.data import ensure_pad_token, tokenize_example
    from runner_image.lora_targets import lora_targets
    from runner_image.precision import pick_device
    from runner_image.tiny import build_tiny_model, load_tiny_tokenizer
    from runner_image.train import forward_loss

    precision = pick_device()
    device, amp_dtype = precision.device, precision.amp_dtype
    tokenizer = load_tiny_tokenizer()
    ensure_pad_token(tokenizer)
    model = build_tiny_model(tokenizer).to(device)
    attention.choose(model, device)
    targets = lora_targets(model.config.model_type)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(0)  # LoRA's random init: the same step, and report, on every run on the same hardware
    model = get_peft_model(model, lora)
    model.train()
    example, _ = tokenize_example(tokenizer, _SMOKE_CHAT, max_seq_len=64, where="smoke example")
    batch = pack([example, example])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    start = time.perf_counter()
    loss_sum, n_tokens = forward_loss(model, batch, device, amp_dtype)
    loss = loss_sum / n_tokens
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, float("inf")))
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    value = float(loss.detach())
    if not math.isfinite(value) or not math.isfinite(grad_norm) or grad_norm == 0.0:
        raise RuntimeError(f"the step gave loss {value} and gradient norm {grad_norm}")
    return {
        "ok": True,
        "device": str(device),
        "precision": precision.describe(),
        "loss": round(value, 4),
        "grad_norm": round(grad_norm, 4),
        "trained_tokens": int(n_tokens),
        "seconds": round(seconds, 3),
    }


def _gpu_facts(torch: Any) -> dict:
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    free, total = torch.cuda.mem_get_info(index)
    return {
        "gpu_count": torch.cuda.device_count(),
        "device_name": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "gpu_memory_total_bytes": int(total),
        "gpu_memory_free_bytes": int(free),
        "bf16_supported": bool(torch.cuda.is_bf16_supported()),
    }


def run_smoke(image_arch: str | None = None) -> dict:
    """The report; `ok` and, when not ok, `reason` (one line) decide the exit status."""
    report: dict[str, Any] = {
        "ok": False,
        "reason": "",
        "notes": [],
        "image_arch": image_arch,
        "runner_protocol": RUNNER_PROTOCOL_VERSION,
        "python": platform.python_version(),
    }
    try:
        table: VersionsTable | None = load_versions()
    except VersionsError as e:
        table = None
        report["notes"].append(f"versions table unreadable: {e}")
    row = table.arch.get(image_arch) if table is not None and image_arch else None
    if image_arch and table is not None and row is None:
        report["notes"].append(
            f"{IMAGE_ARCH_ENV}={image_arch!r} is not an architecture in the versions table"
        )

    try:
        import torch
    except Exception as e:
        report["reason"] = f"torch cannot be imported: {type(e).__name__}: {e}".splitlines()[0]
        return report
    report.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        torch_arch_list=torch.cuda.get_arch_list() if torch.version.cuda else [],
        cuda_available=torch.cuda.is_available(),
    )
    failure = ""
    if report["cuda_available"]:
        report.update(_gpu_facts(torch))
        capability = torch.cuda.get_device_capability()
        if not has_kernels(capability, report["torch_arch_list"]):
            failure = no_kernels_reason(capability, report["torch_arch_list"], torch.__version__, table)
        elif table is not None and image_arch:
            fitting = table.arch_for_capability(*capability)
            if fitting and fitting != image_arch:
                report["notes"].append(
                    f"this GPU (sm_{capability[0]}{capability[1]}) has its own image: {image_tag(fitting)}"
                )
    elif row is not None and row.cuda is not None and not torch.version.cuda:
        failure = f"the {image_arch} image holds a CPU-only build of torch {torch.__version__}: rebuild it"
    elif row is not None and row.cuda is not None:
        failure = (
            f"this is the {image_arch} image but no GPU is visible to it: start the container with "
            "--gpus all (needs the NVIDIA Container Toolkit), or use the cpu image"
        )

    if not failure:
        try:
            report["train_step"] = train_step()
        except Exception as e:
            message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            report["train_step"] = {"ok": False, "reason": message}
            failure = f"a LoRA training step failed: {message}"

    # After the step: importing unsloth patches transformers, which must not colour the step above.
    on_gpu = bool(report["cuda_available"]) and not failure
    report["bitsandbytes"] = probe_package(
        "bitsandbytes", "bitsandbytes", gpu_check=_bitsandbytes_on_gpu if on_gpu else None
    )
    # Both refuse to import without a working CUDA device.
    report["unsloth"] = probe_package("unsloth", "unsloth", load=on_gpu)
    report["flash_attn"] = probe_package("flash_attn", "flash-attn", load=on_gpu)
    if not failure and row is not None:
        wanted = {"bitsandbytes": row.bitsandbytes, "unsloth": row.unsloth, "flash_attn": row.flash_attn}
        for name, version in wanted.items():
            if version and report[name]["status"] != "ok":
                detail = report[name].get("reason", report[name]["status"])
                failure = (
                    f"{name} {version} belongs in the {image_arch} image but is {detail}: rebuild the image"
                )
                break

    report["ok"] = not failure
    report["reason"] = failure
    return report


def main() -> int:
    report = run_smoke(os.environ.get(IMAGE_ARCH_ENV) or None)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    if report["ok"]:
        return 0
    print(f"forge-runner smoke: {report['reason']}", file=sys.stderr)
    return EXIT_CANNOT_TRAIN
