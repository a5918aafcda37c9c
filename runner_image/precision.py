"""Which device trains, in which precision, and how an optimizer step copes with that precision.

- bf16 autocast on GPUs of compute capability 8.0 and up (Ampere+): bf16 has fp32's range, so no scaling.
- fp16 autocast below 8.0 (Turing, Volta), with dynamic loss scaling (torch.amp.GradScaler): fp16's range
  is small, so the loss is scaled up before backward to keep small gradients from flushing to zero, and an
  overflow (an infinite or NaN gradient) skips that step and lowers the scale instead of failing the job.
  The LoRA weights, their gradients and Adam's moments stay fp32 (PEFT keeps adapters in fp32): the master
  weights that the fp16 forward only reads.
- fp32 on the CPU.

FORGE_PRECISION (bf16, fp16 or fp32) in the runner's environment overrides the choice; tests use it to run
the fp16 path on a CPU, whose autocast supports float16 too.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from runner_image import events
from runner_image.errors import EXIT_CRASH, RunnerError

ENV = "FORGE_PRECISION"
# One overflow now and then is how dynamic loss scaling finds its scale; this many in a row means the
# gradients are broken at any scale, which is the same failure as a NaN loss.
MAX_SKIPPED_IN_A_ROW = 10
_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None trains in plain fp32

    @property
    def scaled(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.amp_dtype == torch.float16

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype to load a real model's frozen base weights in: autocast computes in it anyway."""
        return self.amp_dtype or torch.float32

    def describe(self) -> str:
        if self.amp_dtype is None:
            return "fp32"
        if self.scaled:
            return "fp16 autocast with dynamic loss scaling, fp32 LoRA weights"
        return "bf16 autocast"


def pick_device(no_fp16: bool = False) -> Precision:
    """The device, and its precision: bf16 from compute capability 8.0, fp16 below, fp32 on the CPU.

    `no_fp16` (forged's remedy after a NaN under fp16): where fp16 would be used, bf16 if the GPU has it,
    otherwise fp32; the wider range costs speed (fp32) but not correctness.
    """
    bf16_ok = False
    if torch.cuda.is_available():
        device = torch.device("cuda")
        # Not torch.cuda.is_bf16_supported(): it also says yes to GPUs that only emulate bf16, slowly.
        bf16_ok = torch.cuda.get_device_capability() >= (8, 0)
        default = "bf16" if bf16_ok else "fp16"
    else:
        device, default = torch.device("cpu"), "fp32"
    name = os.environ.get(ENV, "").strip().lower() or default
    if name not in _DTYPES:
        raise RunnerError("bad_spec", f"{ENV}={name!r} is not a precision: use bf16, fp16 or fp32")
    if name == "fp16" and no_fp16:
        name = "bf16" if bf16_ok else "fp32"
        events.log(f"fp16 is off for this job (its loss went NaN or infinite under fp16): training in {name}")
    return Precision(device, _DTYPES[name])


NAN_LOSS, NAN_LOSS_FP16 = "nan_loss", "nan_loss_fp16"


def nan_error(step: int, what: str, fp16: bool = False) -> RunnerError:
    """`nan_loss`, or `nan_loss_fp16` under fp16, whose narrow range is a cause forged can remove."""
    return RunnerError(
        NAN_LOSS_FP16 if fp16 else NAN_LOSS,
        f"{what} became NaN or infinite at step {step}" + (" under fp16" if fp16 else ""),
        hint="lower the learning rate" + (", or train in bf16 or fp32" if fp16 else ""),
        exit_code=EXIT_CRASH,
    )


class OptimizerStep:
    """Backward scaling, clipping and the optimizer step, as the precision needs them.

    Without loss scaling a non-finite gradient norm is a `nan_loss` error at once. With it (fp16), it is an
    overflow: the step is skipped, the scale halves and training goes on; only MAX_SKIPPED_IN_A_ROW
    overflows in a row are the error.
    """

    def __init__(
        self,
        precision: Precision,
        optimizer: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        max_grad_norm: float,
    ) -> None:
        self.optimizer = optimizer
        self.params = params
        self.max_grad_norm = max_grad_norm
        self.scaler = torch.amp.GradScaler(precision.device.type) if precision.scaled else None
        self.skipped_in_a_row = 0
        if self.scaler is not None:
            # The scaler skipping the first step (its initial scale is meant to be found too high) makes the
            # scheduler warn that it stepped first; the schedule follows the step count by design.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """What to call backward() on."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def step(self, step: int) -> float:
        """Clip and step for optimizer step `step`; returns the (unscaled) gradient norm, which is not finite
        when an fp16 overflow skipped the step. Gradients are left for the caller to zero."""
        if self.scaler is None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise nan_error(step, "gradient norm")
            self.optimizer.step()
            return grad_norm
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm))
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skips the update when unscale_ found an inf or NaN
        self.scaler.update()
        if math.isfinite(grad_norm):
            self.skipped_in_a_row = 0
            return grad_norm
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise nan_error(step, f"gradient norm ({self.skipped_in_a_row} overflows in a row)", fp16=True)
        events.log(
            f"fp16 overflow at step {step}: the gradient is not finite at loss scale {scale:g}; "
            f"step skipped, loss scale lowered to {self.scaler.get_scale():g}",
            level="warning",
        )
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        scaler = self.scaler.state_dict() if self.scaler is not None else {}
        return {"scaler": scaler, "skipped_in_a_row": self.skipped_in_a_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint from another precision (an fp16 GPU's, resumed on a bf16 one) has no scale to adopt.
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self.skipped_in_a_row = int(state.get("skipped_in_a_row", 0))
