"""Bench: HF -> GGUF conversion time and peak RSS for models of increasing size, against plain write speed.

    python bench/export.py [--sizes 135m,1b,3b] [--dir /tmp/forge-bench-export] [--out-type f16]

Models are random bf16 weights at real shapes (SmolLM2-135M, Llama-3.2-1B, Llama-3.2-3B), written one
layer per safetensors shard so building them never holds a whole model either. Each conversion runs in its
own process so its peak RSS is its own. "write" is this machine's plain write+fsync speed for the same
number of bytes, measured in the same directory just before and just after each conversion (the mean of
the two: on a shared machine the load drifts). "CPU s" is user+system time, of the conversion's tensor
phase and of the plain write: unlike wall time it hardly depends on what else the machine is running.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES: dict[str, dict[str, int]] = {
    "135m": dict(hidden=576, inter=1536, layers=30, heads=9, kv=3, vocab=49152),
    "1b": dict(hidden=2048, inter=8192, layers=16, heads=32, kv=8, vocab=128256),
    "3b": dict(hidden=3072, inter=8192, layers=28, heads=24, kv=8, vocab=128256),
}


def build(out: Path, s: dict[str, int]) -> None:
    """Random bf16 weights at real shapes, one layer per shard (torch only here, to write real bf16)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    head_dim = s["hidden"] // s["heads"]

    def w(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape) * 0.02).to(torch.bfloat16)

    def ones(n: int) -> torch.Tensor:
        return torch.ones(n, dtype=torch.bfloat16)

    weight_map: dict[str, str] = {}

    def shard(name: str, tensors: dict[str, torch.Tensor]) -> None:
        save_file(tensors, str(out / name))
        weight_map.update(dict.fromkeys(tensors, name))

    shard("embed.safetensors", {"model.embed_tokens.weight": w(s["vocab"], s["hidden"])})
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        shard(
            f"layer{i:03d}.safetensors",
            {
                p + "self_attn.q_proj.weight": w(s["heads"] * head_dim, s["hidden"]),
                p + "self_attn.k_proj.weight": w(s["kv"] * head_dim, s["hidden"]),
                p + "self_attn.v_proj.weight": w(s["kv"] * head_dim, s["hidden"]),
                p + "self_attn.o_proj.weight": w(s["hidden"], s["heads"] * head_dim),
                p + "mlp.gate_proj.weight": w(s["inter"], s["hidden"]),
                p + "mlp.up_proj.weight": w(s["inter"], s["hidden"]),
                p + "mlp.down_proj.weight": w(s["hidden"], s["inter"]),
                p + "input_layernorm.weight": ones(s["hidden"]),
                p + "post_attention_layernorm.weight": ones(s["hidden"]),
            },
        )
    shard("norm.safetensors", {"model.norm.weight": ones(s["hidden"])})
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s["hidden"],
        "intermediate_size": s["inter"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv"],
        "vocab_size": s["vocab"],
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(config))
    for f in (ROOT / "runner_image" / "assets" / "tiny").glob("*.json"):
        shutil.copy(f, out / f.name)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain_write(directory: Path, nbytes: int) -> tuple[float, float]:
    """(MB/s, CPU s) for write+fsync of nbytes in 64 MiB chunks (the cost floor of writing the GGUF)."""
    chunk = np.random.default_rng(1).integers(0, 255, 64 * 2**20, dtype=np.uint8).tobytes()
    path = directory / "plain-write.bin"
    cpu = cpu_s()
    start = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    cpu = cpu_s() - cpu
    path.unlink()
    return nbytes / elapsed / 1e6, cpu


def _expected_bytes(hf_dir: Path, out_type: str) -> int:
    """The GGUF's tensor bytes, from the headers (the before-sample needs a size before the file exists)."""
    sys.path.insert(0, str(ROOT))
    from forged.export import gguf_arch
    from forged.export.gguf_writer import _plan_tensors

    plan = gguf_arch.plan(json.loads((hf_dir / "config.json").read_text()))
    return sum(s.type.nbytes for s in _plan_tensors(hf_dir, plan, out_type))


def child(hf_dir: str, out: str, out_type: str) -> None:
    """Runs in its own process: convert, then report timings and this process's peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    from forged.export.gguf_writer import convert

    stamps: list[tuple[float, float]] = []
    start = time.perf_counter()
    convert(
        Path(hf_dir), Path(out), out_type, progress=lambda _m: stamps.append((time.perf_counter(), cpu_s()))
    )
    total = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "total_s": total,
                "first_tensor_s": stamps[0][0] - start,
                "tensors_s": stamps[-1][0] - stamps[0][0],
                "tensors_cpu_s": stamps[-1][1] - stamps[0][1],
                "peak_rss_mib": rss,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="135m,1b")
    ap.add_argument("--dir", default="/tmp/forge-bench-export")
    ap.add_argument("--out-type", default="f16")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        hf_dir = root / f"hf-{size}"
        if not (hf_dir / "config.json").exists():
            build(hf_dir, SHAPES[size])
        out = root / f"{size}.gguf"
        expected = _expected_bytes(hf_dir, args.out_type)
        write_before, _ = plain_write(root, expected)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(hf_dir), str(out), args.out_type],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        nbytes = out.stat().st_size
        write_after, write_cpu = plain_write(root, nbytes)
        write = (write_before + write_after) / 2
        # tensor phase throughput, from the first tensor written (setup = imports, vocabulary, header)
        tensor_rate = nbytes / max(r["tensors_s"], 1e-9) / 1e6
        overall = nbytes / r["total_s"] / 1e6
        rows.append(
            (
                size,
                nbytes / 2**30,
                r["total_s"],
                r["first_tensor_s"],
                overall,
                tensor_rate,
                write,
                r["tensors_cpu_s"],
                write_cpu,
                r["peak_rss_mib"],
            )
        )
        out.unlink()
    print(
        f"{'model':>6} {'GGUF GiB':>8} {'total s':>8} {'setup s':>8} {'MB/s':>7} {'tensor MB/s':>11} "
        f"{'write MB/s':>10} {'% write':>7} {'CPU s':>6} {'write CPU s':>11} {'peak RSS MiB':>12}"
    )
    for size, gib, total, setup, overall, tensor_rate, write, cpu, write_cpu, rss in rows:
        print(
            f"{size:>6} {gib:8.2f} {total:8.1f} {setup:8.1f} {overall:7.0f} {tensor_rate:11.0f} "
            f"{write:10.0f} {100 * tensor_rate / write:6.0f}% {cpu:6.1f} {write_cpu:11.1f} {rss:12.0f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
