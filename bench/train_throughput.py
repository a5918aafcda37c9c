"""Forge's runner against a plain transformers Trainer + PEFT baseline, on the same model, data and LoRA.

    python bench/train_throughput.py                        # CPU: a small Llama-shaped model, ~5 minutes
    python bench/train_throughput.py --shape llama-3.2-1b \\
        --tokenizer DIR_WITH_LLAMA_3_2_TOKENIZER            # GPU: Llama-3.2-1B shape, bf16, adds MFU

Both runs see the same random-weight model (saved once, loaded by each), the same examples tokenized by the
runner's own code (so the same trained tokens), the same LoRA config, sequence cap, micro-batch, accumulation
and number of optimizer steps, one after the other in this process. The baseline is what most fine-tuning
scripts do: Trainer with DataCollatorForSeq2Seq padding each batch to its longest example, no packing.

Reported: non-pad tokens per second of the training loop, its wall time, peak memory (CUDA: peak allocated;
CPU: peak RSS above the level before the run, sampled every 10 ms), the ratio forge/baseline, and on CUDA
the model FLOPs utilisation. MFU counts the FLOPs a LoRA step needs: forward 2N and input-gradient 2N per
token for the N frozen linear weights (the LM head over every token, as a standard implementation computes
it), plus causal attention over each example's own length, forward and backward; the weight gradients of
frozen weights are not computed, so the usual 6N would overstate it. Peak: 989 TFLOP/s (H100/H200 SXM dense
bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner_image.data import ensure_pad_token, tokenize_example

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
SHAPES = {
    # A CPU-sized Llama: big enough that the transformer layers, not the LM head, are most of the work.
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4),
    # meta-llama/Llama-3.2-1B's shapes (modelmeta config.json); rope scaling does not change the cost.
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                         rope_theta=500000.0),
}  # fmt: skip
PLACEHOLDERS = {"", "no input", "<no input>", "n/a", "none", "noinput"}


@dataclass
class Result:
    name: str
    tokens: int
    seconds: float
    peak_bytes: int
    flops: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


class PeakRss:
    """Peak resident memory above the level at entry, sampled on a thread (CPU has no allocator counter)."""

    def __enter__(self) -> PeakRss:
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def used(self) -> int:
        return self.peak - self.base


def alpaca_conversations(path: Path, limit: int) -> list[list[dict[str, str]]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    convs = []
    for r in rows:
        extra = r.get("input", "").strip()
        prompt = r["instruction"].strip() + (f"\n\n{extra}" if extra.lower() not in PLACEHOLDERS else "")
        if not r.get("output", "").strip():
            continue
        convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": r["output"]}])
        if len(convs) == limit:
            break
    return convs


def build_model_dir(out: Path, shape: str, tokenizer_dir: Path | None, dtype: torch.dtype) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from runner_image.tiny import load_tiny_tokenizer

    tok = (
        AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        if tokenizer_dir
        else load_tiny_tokenizer()
    )
    ensure_pad_token(tok)
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SHAPES[shape],
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    del model
    return out


def linear_params(model_dir: Path) -> int:
    """Parameters of every matmul a token goes through (layers and the LM head), embeddings excluded."""
    cfg = json.loads((model_dir / "config.json").read_text())
    d, inter, layers, vocab = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
                               cfg["vocab_size"])  # fmt: skip
    head_dim = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * inter
    return layers * per_layer + d * vocab


def step_flops(model_dir: Path, lengths: list[int]) -> float:
    """Hardware FLOPs of a LoRA training pass over examples of these lengths (see the module docstring)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    d, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    linear = 4 * linear_params(model_dir) * sum(lengths)
    # QK^T and AV: 2 matmuls x 2 FLOPs x L^2 x d per layer, halved by the causal mask; x3 for fwd + bwd.
    attn = 3 * sum(layers * 2 * d * n * n for n in lengths)
    return float(linear + attn)


def run_forge(model_dir: Path, train_file: Path, work: Path, args: argparse.Namespace) -> Result:
    from runner_image.signals import StopFlag
    from runner_image.spec import parse_spec
    from runner_image.train import run

    spec = parse_spec(
        {
            "job_id": "bench",
            "model": {"kind": "path", "path": str(model_dir)},
            "train_file": str(train_file),
            "output_dir": str(work / "forge-out"),
            "checkpoint_dir": str(work / "forge-ckpt"),
            "hparams": hparams(args),
        }
    )
    events = io.StringIO()
    _reset_cuda_peak()
    with PeakRss() as rss, contextlib.redirect_stdout(events):
        code = run(spec, StopFlag())
    if code != 0:
        raise SystemExit(f"forge run failed (exit {code}):\n{events.getvalue()[-2000:]}")
    metrics = json.loads((work / "forge-out" / "metrics.json").read_text())
    seconds = metrics["train_tokens"] / metrics["tokens_per_second"]
    return Result("forge", metrics["train_tokens"], seconds, _peak(rss), 0.0)


def hparams(args: argparse.Namespace) -> dict[str, object]:
    return {
        "max_steps": args.steps,
        "micro_batch_size": args.micro_batch,
        "grad_accum": args.grad_accum,
        "learning_rate": 2e-4,
        "lora_rank": 16,
        "lora_alpha": 32,
        "max_seq_len": args.max_seq_len,
        "checkpoint_every": 0,
        "eval_every": 0,
        "warmup_ratio": 0.05,
        "seed": 7,
    }


def run_baseline(model_dir: Path, examples: list[dict[str, list[int]]], work: Path, args) -> Result:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.get_device_capability() >= (8, 0)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    _reset_cuda_peak()
    with PeakRss() as rss:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa"
        )
        hp = hparams(args)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoraConfig(r=hp["lora_rank"], lora_alpha=hp["lora_alpha"], lora_dropout=0.0, bias="none",
                          task_type="CAUSAL_LM", target_modules=targets)  # fmt: skip
        model = get_peft_model(model, lora)
        pad = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        counted = {"tokens": 0}

        def collate(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
            batch = pad([{**f, "attention_mask": [1] * len(f["input_ids"])} for f in features])
            counted["tokens"] += int(batch["attention_mask"].sum())
            return batch

        targs = TrainingArguments(
            output_dir=str(work / "baseline"),
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=args.steps,
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            warmup_steps=round(0.05 * args.steps),
            max_grad_norm=1.0,
            weight_decay=0.0,
            bf16=bf16,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=7,
            use_cpu=not cuda,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=examples, data_collator=collate)
        out = trainer.train()
    return Result("baseline", counted["tokens"], out.metrics["train_runtime"], _peak(rss), 0.0)


def _reset_cuda_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(rss: PeakRss) -> int:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else rss.used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FORGE_REALDATA", "../shared/datasets"))
                    / "alpaca" / "alpaca_5000.json")  # fmt: skip
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the runner's tiny one)")
    ap.add_argument("--examples", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no alpaca data at {args.data}: pass --data or set FORGE_REALDATA")

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.get_device_capability() >= (8, 0) else torch.float32
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_model_dir(work / "model", args.shape, args.tokenizer, dtype)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        convs = alpaca_conversations(args.data, args.examples)
        examples = [tokenize_example(tok, c, args.max_seq_len)[0] for c in convs]
        train_file = work / "train.jsonl"
        train_file.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
        lengths = [len(e.input_ids) for e in examples]
        # Both runs draw from the same examples, so FLOPs per token follow from the data's lengths.
        per_token = step_flops(model_dir, lengths) / sum(lengths)
        where = f"cuda {torch.cuda.get_device_name()}" if cuda else "cpu"
        print(f"{len(examples)} alpaca examples, {sum(lengths) / len(lengths):.0f} tokens on average "
              f"(max {max(lengths)}); shape {args.shape}; {where}; "
              f"{args.steps} steps of {args.micro_batch} x {args.grad_accum}")  # fmt: skip

        forge = run_forge(model_dir, train_file, work, args)
        try:
            base = run_baseline(
                model_dir, [{"input_ids": e.input_ids, "labels": e.labels} for e in examples], work, args
            )
        except torch.OutOfMemoryError as e:
            # Padding to the longest example and full-vocabulary logits run out first; that is a result too.
            peak_mib = forge.peak_bytes / 2**20
            reason = str(e).splitlines()[0]
            print(f"forge: {forge.tokens_per_second:,.0f} non-pad tokens/s, peak {peak_mib:,.0f} MiB")
            print(f"baseline: out of memory at this batch ({reason})")
            return

    rows = []
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if cuda and k in torch.cuda.get_device_name()), None)
    for r in (base, forge):
        mfu = r.tokens_per_second * per_token / peak if peak else None
        rows.append({"run": r.name, "tokens_per_second": r.tokens_per_second, "tokens": r.tokens,
                     "seconds": r.seconds, "peak_mib": r.peak_bytes / 2**20, "mfu": mfu})  # fmt: skip
    ratio = forge.tokens_per_second / base.tokens_per_second
    mem_ratio = forge.peak_bytes / base.peak_bytes if base.peak_bytes else float("nan")
    print(f"\n{'run':<10}{'non-pad tok/s':>15}{'tokens':>10}{'wall s':>9}{'peak MiB':>10}{'MFU':>8}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(f"{row['run']:<10}{row['tokens_per_second']:>15,.0f}{row['tokens']:>10,}{row['seconds']:>9.1f}"
              f"{row['peak_mib']:>10,.0f}{mfu:>8}")  # fmt: skip
    print(f"\nforge / baseline: {ratio:.2f}x tokens/s at {mem_ratio:.2f}x the peak memory")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio, "memory_ratio": mem_ratio}, indent=2))


if __name__ == "__main__":
    main()
