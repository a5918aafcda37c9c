"""The training recipe: a RunnerSpec in, a LoRA adapter out.

Deliberately flat (in the spirit of torchtune's recipes): `run` reads top to bottom as set up, resume, train,
save. Exact resume is a design constraint throughout: everything that influences the weights (data order,
RNG, optimizer, schedule) is either a pure function of (seed, epoch, step) or saved in the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from runner_image import attention, checkpoint, events, faults, quantization, unsloth_path
from runner_image.batching import Batch, batch_tokens, model_inputs, pack
from runner_image.data import (
    IGNORE_INDEX,
    Example,
    cap_lengths,
    ensure_pad_token,
    epoch_order,
    load_dataset,
)
from runner_image.data import micro_batches as split_micro_batches
from runner_image.errors import EXIT_CRASH, EXIT_OK, EXIT_PREEMPTED, RunnerError
from runner_image.format_check import format_preflight
from runner_image.hf_tokenizer import load_pretrained_tokenizer
from runner_image.lora_targets import lora_targets
from runner_image.precision import OptimizerStep, nan_error, pick_device
from runner_image.signals import StopFlag
from runner_image.spec import HParams, ModelRef, RunnerSpec
from runner_image.tiny import build_model, load_tokenizer, pipeline_check_warning, tiny_name
from runner_image.trackers import Trackers

MAX_GRAD_NORM = 1.0


def load_base(
    ref: ModelRef,
    amp_dtype: torch.dtype | None,
    *,
    quantized: bool = False,
    unsloth_hparams: HParams | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The base model and its tokenizer (with a pad token distinct from EOS); also whether the vocab grew.

    `quantized`: 4-bit for QLoRA (CUDA only). `unsloth_hparams`: load through Unsloth, for these settings.
    Export calls this with neither, so a merge always starts from the full-precision base.
    """
    dtype = amp_dtype or torch.float32
    if ref.kind == "tiny":
        events.log(pipeline_check_warning(ref.tiny_family), level="warning")
        tokenizer = load_tokenizer(ref.tiny_family)
        ensure_pad_token(tokenizer)
        model: PreTrainedModel = build_model(ref.tiny_family, tokenizer)
        if quantized:
            model = quantization.quantize_built(model, dtype)
        return model, tokenizer, ensure_pad_token(tokenizer, model)
    assert ref.path is not None
    if not Path(ref.path).is_dir():
        raise RunnerError("bad_model", f"model directory {ref.path} does not exist")
    try:
        if unsloth_hparams is not None:
            model, tokenizer = unsloth_path.load(ref, unsloth_hparams, dtype, quantized)
        else:
            tokenizer = load_pretrained_tokenizer(ref.path)
            # Base weights in the autocast dtype, which computes in it anyway: half the memory of fp32 (a
            # quarter of it in 4 bits); the LoRA weights stay fp32.
            model = (
                quantization.load_quantized(ref.path, dtype)
                if quantized
                else AutoModelForCausalLM.from_pretrained(ref.path, local_files_only=True, dtype=dtype)
            )
    except (OSError, ValueError) as e:
        raise RunnerError("bad_model", f"cannot load a causal LM from {ref.path}: {e}") from e
    # A base model without a chat template is fine for plain-text data; load_dataset refuses chat rows.
    return model, tokenizer, ensure_pad_token(tokenizer, model)


@contextmanager
def logits_only_at(model: PeftModel, positions: torch.Tensor) -> Iterator[None]:
    """Run the LM head only on the hidden states at `positions` (a [batch, seq] bool mask).

    The head is the biggest matmul in a small model (hidden x vocab per token) and most positions (prompt,
    padding) have no label, so projecting only the trained positions is roughly 2x faster on CPU and avoids a
    [batch, seq, vocab] logits tensor. The model then returns logits of shape [n_positions, vocab].
    """
    head = model.get_output_embeddings()

    def select(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0][positions], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def forward_loss(
    model: PeftModel, batch: Batch, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the trained tokens of one micro-batch (packed or padded), and their count."""
    labels = batch["labels"].to(device)
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    # The hidden state at position t predicts token t+1.
    positions = F.pad(keep, (0, 1), value=False)
    with (
        logits_only_at(model, positions),
        torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
    ):
        logits = model(**model_inputs(batch, device), use_cache=False).logits
    n = int(keep.sum())
    if logits.dim() != 2 or logits.shape[0] != n:
        raise RuntimeError(f"unexpected logits shape {tuple(logits.shape)} for {n} trained positions")
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), n


@torch.no_grad()
def evaluate(
    model: PeftModel,
    examples: list[Example],
    micro_batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> float:
    """Mean loss per trained token over the whole set (token-weighted, so batch boundaries do not matter)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), micro_batch_size):
        loss_sum, n = forward_loss(model, pack(examples[i : i + micro_batch_size]), device, amp_dtype)
        total += loss_sum.item()
        count += n
    model.train()
    return total / max(count, 1)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier for the learning rate of optimizer step `step + 1`: linear warmup, then cosine to zero."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(spec: RunnerSpec, with_method: bool = False) -> str:
    """What a checkpoint must agree with to be resumed from: the model, the data and the run's shape.

    forged's self-healing resumes a job with a smaller micro-batch (same effective batch), a lower learning
    rate, gradient checkpointing, a sequence cap, 4-bit base weights or without fp16; each continues the
    same adapter, so none is part of its identity. `with_method`: the identity before 4-bit became a
    remedy, kept so that QLoRA checkpoints written then still resume.
    """
    hp = spec.hparams.model_dump(
        exclude={
            "checkpoint_every",
            "eval_every",
            "micro_batch_size",
            "grad_accum",
            "learning_rate",
            "gradient_checkpointing",
            "seq_cap_percentile",
            "no_fp16",
            "method",
        }
    )
    hp["effective_batch"] = spec.hparams.micro_batch_size * spec.hparams.grad_accum
    if with_method and spec.hparams.method != "lora":
        hp["method"] = spec.hparams.method
    ident = {
        "model": spec.model.model_dump(),
        "hparams": hp,
        "train": _sha256(spec.train_file),
        "val": _sha256(spec.val_file) if spec.val_file else None,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _base_name(ref: ModelRef) -> str:
    """What the adapter records as its base: a local path, or forge-tiny[-family] for a built-in model."""
    return f"forge-{tiny_name(ref.tiny_family)}" if ref.kind == "tiny" else str(ref.path)


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def run(spec: RunnerSpec, stop: StopFlag) -> int:
    hp = spec.hparams

    # --- set up -------------------------------------------------------------------------------------------
    precision = pick_device(no_fp16=hp.no_fp16)
    device, amp_dtype = precision.device, precision.amp_dtype
    qlora = hp.method == "qlora"
    events.log(f"device {device.type}, {precision.describe()}, {hp.method}, job {spec.job_id}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # forged placed the job: say on which GPUs, for whoever reads the log
        events.log(f"GPUs given to this job: CUDA_VISIBLE_DEVICES={visible or '(none)'}")
    if qlora:
        quantization.require_support(device)  # before minutes of loading, not after
    why_not_unsloth = unsloth_path.why_not(spec.model, device)
    if why_not_unsloth:
        events.log(f"{why_not_unsloth}: training with transformers + PEFT")
    else:
        events.log("loading and attaching LoRA with unsloth")
    model, tokenizer, vocab_grew = load_base(
        spec.model,
        precision.weights_dtype,
        quantized=qlora,
        unsloth_hparams=None if why_not_unsloth else hp,
    )

    train_set = load_dataset(spec.train_file, tokenizer, hp.max_seq_len, "train")
    val_set = load_dataset(spec.val_file, tokenizer, hp.max_seq_len, "val") if spec.val_file else None
    format_preflight(train_set, tokenizer, hp.max_seq_len)
    for note in train_set.notes + (val_set.notes if val_set else []):
        events.log(note, level="warning")
    if hp.seq_cap_percentile:
        # After the format check, which must see the examples as max_seq_len leaves them.
        cap = cap_lengths(train_set, hp.seq_cap_percentile)
        events.log(
            f"sequence cap: training examples cut to {cap.length} tokens, the {hp.seq_cap_percentile:g}th "
            f"percentile of their lengths (max_seq_len {hp.max_seq_len}): {cap.truncated} truncated, "
            f"{cap.dropped} dropped (no trained token left within the cap)",
            level="warning",
        )
    train = train_set.examples
    events.log(
        f"train: {len(train)} examples, {sum(e.trained_tokens for e in train)} trained tokens"
        + (f"; val: {len(val_set.examples)} examples" if val_set else "")
    )

    torch.manual_seed(hp.seed)
    random.seed(hp.seed)
    lora = LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=lora_targets(model.config.model_type),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if why_not_unsloth:
        model = _attach_lora(model, lora, hp.gradient_checkpointing, device)
    else:
        model = unsloth_path.attach_lora(model, lora, hp)
    model.peft_config["default"].base_model_name_or_path = _base_name(spec.model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=0.0)
    stepper = OptimizerStep(precision, optimizer, trainable, MAX_GRAD_NORM)

    n_batches = math.ceil(len(train) / hp.micro_batch_size)
    steps_per_epoch = math.ceil(n_batches / hp.grad_accum)
    total_steps = hp.max_steps if hp.max_steps > 0 else hp.epochs * steps_per_epoch
    warmup_steps = round(hp.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup_steps=warmup_steps, total_steps=total_steps)
    )
    events.log(
        f"{total_steps} optimizer steps ({steps_per_epoch} per epoch), micro-batch {hp.micro_batch_size}, "
        f"grad accum {hp.grad_accum}, {sum(p.numel() for p in trainable)} trainable LoRA parameters"
    )

    # --- pre-flight ----------------------------------------------------------------------------------------
    # Before the checkpoint's RNG state is restored, so a resumed run still matches an uninterrupted one.
    _preflight(model, train, hp.micro_batch_size, hp.learning_rate, device, amp_dtype)

    # --- resume --------------------------------------------------------------------------------------------
    ckpt_dir = Path(spec.checkpoint_dir)
    removed = checkpoint.remove_incomplete(ckpt_dir)
    if removed:
        events.log(f"removed incomplete checkpoints: {', '.join(sorted(removed))}", level="warning")
    fp = fingerprint(spec)
    pos = checkpoint.Position(fingerprint=fp)
    saved_step: int | None = None
    last_eval_step: int | None = None
    latest = checkpoint.latest(ckpt_dir)
    if latest is not None:
        if checkpoint.read_position(latest).fingerprint not in (fp, fingerprint(spec, with_method=True)):
            raise RunnerError(
                "checkpoint_mismatch",
                f"{latest} was written for a different model, data or hyperparameters",
                hint=f"delete {ckpt_dir} to start over",
            )
        pos = checkpoint.load(latest, model, optimizer, scheduler, device, stepper)
        saved_step = pos.step
        events.log(f"resumed from checkpoint step {pos.step}")
        _adopt_new_settings(pos, hp, optimizer, scheduler)
    pos.extra["micro_batch_size"] = hp.micro_batch_size

    out_dir = Path(spec.output_dir)
    trackers = Trackers(out_dir, spec.job_id, pos.step + 1 if saved_step is not None else 0, hp.model_dump())
    events.artifact("tensorboard", str(trackers.dir))

    def save_checkpoint() -> None:
        nonlocal saved_step
        if saved_step == pos.step:
            return
        path = checkpoint.save(ckpt_dir, model, optimizer, scheduler, pos, stepper)
        saved_step = pos.step
        events.checkpoint(pos.step, str(path))

    def run_eval() -> None:
        nonlocal last_eval_step
        assert val_set is not None
        val_loss = evaluate(model, val_set.examples, hp.micro_batch_size, device, amp_dtype)
        if pos.first_val_loss is None:
            pos.first_val_loss = val_loss
        pos.final_val_loss = val_loss
        last_eval_step = pos.step
        events.evaluation(pos.step, val_loss)
        trackers.log(pos.step, {"eval/val_loss": val_loss})

    if val_set is not None and pos.step == 0:
        run_eval()

    # --- train ---------------------------------------------------------------------------------------------
    loop_start, steps_here = time.monotonic(), 0
    train_seconds, train_tokens = 0.0, 0
    while pos.step < total_steps:
        batches = split_micro_batches(epoch_order(len(train), hp.seed, pos.epoch), hp.micro_batch_size)
        while pos.batch < len(batches) and pos.step < total_steps:
            if stop.requested:
                save_checkpoint()
                events.log(f"stopped by SIGTERM at step {pos.step}; the next start resumes from there")
                trackers.close()
                return EXIT_PREEMPTED
            step_start = time.monotonic()
            learning_rate = scheduler.get_last_lr()[0]
            window = batches[pos.batch : pos.batch + hp.grad_accum]
            with _oom_guard(f"at step {pos.step + 1}", hp.micro_batch_size):
                faults.maybe_oom(pos.step + 1, hp.micro_batch_size, learning_rate)
                loss_total, tokens, window_targets = _accumulate(
                    model, train, window, device, amp_dtype,
                    step=pos.step + 1, learning_rate=learning_rate, micro_batch_size=hp.micro_batch_size,
                    scale=stepper.scale,
                )  # fmt: skip
            faults.maybe_overflow(trainable, pos.step + 1, hp.micro_batch_size, learning_rate)
            # A step skipped for an fp16 overflow still consumes its window and its place in the
            # schedule: position and learning rate stay functions of the step, as exact resume needs.
            grad_norm = stepper.step(pos.step + 1)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            pos.step += 1
            pos.batch += len(window)
            loss = loss_total / window_targets
            if pos.first_loss is None:
                pos.first_loss = loss
            pos.final_loss = loss
            steps_here += 1
            now = time.monotonic()
            train_seconds += now - step_start
            train_tokens += tokens
            tokens_per_second = tokens / max(now - step_start, 1e-9)
            events.step(
                step=pos.step,
                total_steps=total_steps,
                loss=loss,
                learning_rate=learning_rate,
                tokens_per_second=tokens_per_second,
                eta_seconds=(now - loop_start) / steps_here * (total_steps - pos.step),
                epoch=pos.epoch + pos.batch / len(batches),
                grad_norm=grad_norm,
            )
            trackers.log(
                pos.step,
                {
                    "train/loss": loss,
                    "train/learning_rate": learning_rate,
                    "train/grad_norm": grad_norm,
                    "train/tokens_per_second": tokens_per_second,
                },
            )
            if val_set is not None and hp.eval_every and pos.step % hp.eval_every == 0:
                run_eval()
            if hp.checkpoint_every and pos.step % hp.checkpoint_every == 0:
                save_checkpoint()
        if pos.batch >= len(batches):
            pos.epoch += 1
            pos.batch = 0

    if val_set is not None and last_eval_step != pos.step:
        run_eval()
    trackers.close()

    # --- save ----------------------------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter_dir = out_dir / "adapter"
    tmp = out_dir / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # The embeddings only belong in the adapter if we had to grow the vocabulary for a pad token.
    model.save_pretrained(str(tmp), save_embedding_layers=vocab_grew)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(tmp, adapter_dir)
    _write_json(
        out_dir / "metrics.json",
        {
            "first_loss": pos.first_loss,
            "final_loss": pos.final_loss,
            "first_val_loss": pos.first_val_loss,
            "final_val_loss": pos.final_val_loss,
            "steps": pos.step,
            "total_steps": total_steps,
            # This attempt only: a resumed run does not know how fast the earlier attempts were.
            "tokens_per_second": train_tokens / train_seconds if train_seconds > 0 else None,
            "train_tokens": train_tokens,
            "base_model": _base_name(spec.model),
        },
    )
    events.artifact("adapter", str(adapter_dir))
    return EXIT_OK


def _attach_lora(
    model: PreTrainedModel, lora: LoraConfig, gradient_checkpointing: bool, device: torch.device
) -> PeftModel:
    """transformers + PEFT: LoRA on the base model, which is moved to `device` unless bitsandbytes put it
    there already (a 4-bit model cannot move)."""
    quantized = quantization.is_quantized(model)
    if quantized:
        model = quantization.prepare(model)
    if gradient_checkpointing:
        # Non-reentrant checkpointing restores the RNG state when it recomputes, so dropout matches.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad for LoRA
        events.log("gradient checkpointing on: less memory for activations, slower steps")
    kernel = attention.choose(model, device)
    events.log(f"padding-free batches: each micro-batch is one packed row; attention kernel {kernel}")
    try:
        return get_peft_model(model if quantized else model.to(device), lora)
    except ValueError as e:
        raise RunnerError("bad_model", f"cannot attach LoRA to this model: {e}") from e


def _accumulate(
    model: PeftModel,
    train: list[Example],
    window: list[list[int]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    step: int,
    learning_rate: float,
    micro_batch_size: int,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
) -> tuple[float, int, int]:
    """Forward and backward over one accumulation window; returns (summed loss, tokens, trained tokens)."""
    batches = [pack([train[i] for i in mb]) for mb in window]
    # Normalise by the trained tokens of the whole accumulation window, so every token weighs the same
    # however the examples fall into micro-batches (which is what lets self-healing change the split).
    window_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    loss_total, tokens = 0.0, 0
    for batch in batches:
        loss_sum, _ = forward_loss(model, batch, device, amp_dtype)
        loss_sum = faults.poison_loss(loss_sum, step, micro_batch_size, learning_rate)
        if not torch.isfinite(loss_sum):
            raise nan_error(step, "loss", fp16=amp_dtype == torch.float16)
        scale(loss_sum / window_targets).backward()  # fp16 scales the loss up (precision.py)
        loss_total += loss_sum.item()
        tokens += batch_tokens(batch)
    return loss_total, tokens, window_targets


def _adopt_new_settings(
    pos: checkpoint.Position,
    hp: HParams,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> None:
    """Continue a checkpoint under a new micro-batch split or learning rate (forged's self-healing)."""
    saved_micro = int(pos.extra.get("micro_batch_size", hp.micro_batch_size))
    if saved_micro != hp.micro_batch_size:
        consumed = pos.batch * saved_micro  # examples of this epoch already trained on
        if consumed % hp.micro_batch_size:
            raise RunnerError(
                "checkpoint_mismatch",
                f"cannot continue at example {consumed} with micro-batch {hp.micro_batch_size}",
                hint="keep micro-batch x accumulation equal to the checkpoint's, with a micro-batch that "
                "divides the old one",
            )
        pos.batch = consumed // hp.micro_batch_size
        events.log(
            f"continuing with micro-batch {hp.micro_batch_size} x accumulation {hp.grad_accum} "
            f"(was micro-batch {saved_micro}); the effective batch is unchanged"
        )
    if not math.isclose(scheduler.base_lrs[0], hp.learning_rate, rel_tol=1e-9):
        events.log(f"continuing with learning rate {hp.learning_rate:g} (was {scheduler.base_lrs[0]:g})")
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        scheduler.base_lrs = [hp.learning_rate for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["initial_lr"] = hp.learning_rate
            group["lr"] = hp.learning_rate * factor
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports


def _preflight(
    model: PeftModel,
    train: list[Example],
    micro_batch_size: int,
    learning_rate: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> None:
    """One forward and backward on the longest examples, so running out of memory happens in the first
    seconds rather than hours in, when the longest batch finally comes up. No weights change."""
    longest = sorted(train, key=lambda e: len(e.input_ids), reverse=True)[:micro_batch_size]
    tokens = sum(len(e.input_ids) for e in longest)
    try:
        with _oom_guard(f"in the pre-flight step (the {len(longest)} longest examples, {tokens} tokens)",
                        micro_batch_size):  # fmt: skip
            faults.maybe_oom(0, micro_batch_size, learning_rate)
            loss_sum, _ = forward_loss(model, pack(longest), device, amp_dtype)
            loss_sum.backward()
    finally:
        model.zero_grad(set_to_none=True)
    events.log(f"pre-flight: the longest micro-batch ({tokens} tokens) fits in memory")


@contextmanager
def _oom_guard(where: str, micro_batch_size: int) -> Iterator[None]:
    """Out-of-memory, from CUDA or from the host allocator, becomes the `oom` error forged heals."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise _oom_error(where, micro_batch_size, e) from e
    except RuntimeError as e:
        if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
            raise
        raise _oom_error(where, micro_batch_size, e) from e


def _oom_error(where: str, micro_batch_size: int, exc: BaseException) -> RunnerError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RunnerError(
        "oom",
        f"out of memory {where} with micro-batch {micro_batch_size}: {first_line}",
        hint="forged retries from the last checkpoint with a smaller micro-batch",
        exit_code=EXIT_CRASH,
    )
