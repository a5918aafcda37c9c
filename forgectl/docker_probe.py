"""`forgectl docker probe`: what torch sees inside the runner image on forged's machine, in words."""

from __future__ import annotations

import json
from typing import Any

from forge.v1 import hardware_pb2

GiB = 1 << 30


def report_of(found: hardware_pb2.ProbeImageResponse) -> dict[str, Any]:
    try:
        parsed = json.loads(found.report_json) if found.report_json else {}
    except ValueError:
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


def as_json(found: hardware_pb2.ProbeImageResponse) -> dict[str, Any]:
    return {
        "image": found.image,
        "arch": found.arch,
        "ok": found.ok,
        "reason": found.reason,
        "note": found.note,
        "report": report_of(found),
    }


def lines(found: hardware_pb2.ProbeImageResponse) -> list[str]:
    report = report_of(found)
    verdict = "can train on this machine" if found.ok else f"cannot train here: {found.reason}"
    out = [f"{found.image}: {verdict}"]
    if found.note:
        out.append(f"note: {found.note}")
    torch = report.get("torch")
    if torch:
        cuda = report.get("torch_cuda") or "none"
        out.append(f"torch {torch} (CUDA build {cuda}), Python {report.get('python', '?')}")
    if report.get("cuda_available"):
        total, free = report.get("gpu_memory_total_bytes", 0), report.get("gpu_memory_free_bytes", 0)
        bf16 = "bf16" if report.get("bf16_supported") else "no bf16"
        name, capability = report.get("device_name", "?"), report.get("compute_capability", "?")
        out.append(
            f"GPU: {name}, compute capability {capability}, "
            f"{free / GiB:.1f} of {total / GiB:.1f} GiB free, {bf16}"
        )
    elif torch:
        out.append("GPU: none visible to torch in the container")
    step = report.get("train_step") or {}
    if step:
        done = "ok" if step.get("ok") else f"failed ({step.get('reason', '?')})"
        out.append(f"LoRA step on {step.get('device', '?')} in {step.get('precision', '?')}: {done}")
    packages = [
        f"{name} {report[key]['status']}"
        for key, name in (
            ("bitsandbytes", "bitsandbytes"),
            ("unsloth", "unsloth"),
            ("flash_attn", "flash-attn"),
        )
        if isinstance(report.get(key), dict)
    ]
    if packages:
        out.append(", ".join(packages))
    out.extend(f"note: {n}" for n in report.get("notes", []))
    return out
