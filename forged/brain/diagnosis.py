"""Why a job failed and what to do about it, in words a user without ML background can act on.

The offline rules know forge's own error codes (docs/runner-protocol.md) and the few ways a run dies from
outside (disk full, killed). An LLM brain, when the job chose one, reads the same evidence and answers as a
validated `DiagnosisAnswer`; any brain error, an unusable answer or no answer within the time limit gives
the rules' diagnosis instead. Diagnosing never raises: a failed job must always end.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, Field

from forged.brain import pii
from forged.brain.llm.base import BrainError, LLMBrain, one_line
from forged.brain.llm.select import OFFLINE, BrainChoiceError, BrainSelector

log = structlog.get_logger("forged.diagnosis")

LOG_LINES_SENT = 40
LOG_CHARS_SENT = 6000
DEFAULT_TIMEOUT_S = 60.0

_SYSTEM = (
    "You diagnose failed LoRA fine-tuning jobs run by Forge (transformers + PEFT). From the error and the "
    "last log lines, give the single most likely cause and one concrete fix the user can apply (a setting to "
    "change, with its new value, or a command to run). Forge already retried automatically where listed. "
    "Be brief and do not invent facts that are not in the evidence. Answer with JSON only."
)


class Diagnosis(BaseModel):
    cause: str
    fix: str
    brain: str = OFFLINE

    def text(self) -> str:
        """How Job.diagnosis stores it: one line, cause then fix."""
        return f"{self.cause} Fix: {self.fix}"


class DiagnosisAnswer(BaseModel):
    """What an LLM brain must answer."""

    cause: str = Field(min_length=3, max_length=500, description="the most likely cause, one sentence")
    fix: str = Field(min_length=3, max_length=700, description="one concrete fix the user can apply")


@dataclass(frozen=True)
class _Rule:
    codes: tuple[str, ...]  # empty: any error code
    says: str  # a regex over the error and the last log lines, lower-case; empty: anything
    cause: str
    fix: str

    def matches(self, code: str, evidence: str) -> bool:
        if self.codes and code not in self.codes:
            return False
        return not self.says or re.search(self.says, evidence) is not None


_DATA_CODES = ("bad_data", "no_trainable_examples", "bad_template", "template_not_prefix", "no_chat_template")
# First match wins: outside causes (disk, signals) before the codes they would otherwise be reported under.
_RULES: tuple[_Rule, ...] = (
    _Rule(
        (),
        r"no space left on device|errno 28|disk quota exceeded",
        "the disk under forged's state directory is full, so a checkpoint, the adapter or a log could not be "
        "written.",
        "free space there (old job workspaces under <state-dir>/jobs hold checkpoints) or give forged a "
        "larger --state-dir, then resubmit; the job resumes from its last complete checkpoint.",
    ),
    _Rule(
        ("oom",),
        "",
        "the run ran out of memory: the model, the micro-batch and the sequence length together need more "
        "than the GPU (or the machine) has.",
        "lower micro_batch_size (accumulate more to keep the effective batch) or max_seq_len, turn on "
        "gradient_checkpointing, or pick a smaller model (or QLoRA on an NVIDIA GPU).",
    ),
    _Rule(
        ("nan_loss",),
        "",
        "training diverged: the loss became NaN or infinite, usually a learning rate too high for the model "
        "or broken examples.",
        "lower learning_rate (models under 500M parameters want 1e-4 or less), keep bf16 rather than fp16, "
        "and check the data with `forgectl study` for empty or mangled examples.",
    ),
    _Rule(
        _DATA_CODES,
        "",
        "the training data cannot be used as it is (see the error for the first bad record).",
        "look at the data with `forgectl study FILE`, fix or drop the records it flags, run `forgectl "
        "prepare` again and resubmit.",
    ),
    _Rule(
        ("model", "bad_model"),
        r"offline|hub|huggingface|hf_hub|resolve|not found|does not exist|no such file",
        "the base model is not on forged's machine and could not be downloaded (the Hugging Face hub is "
        "unreachable from forged, or the name is wrong).",
        "download it where forged runs (`huggingface-cli download ORG/NAME`) and pass its directory as the "
        "model, check the name with `forgectl models`, or use `tiny` to check the pipeline.",
    ),
    _Rule(
        (
            "model",
            "bad_model",
        ),
        "",
        "the base model could not be loaded.",
        "check the model name or directory (a directory needs config.json, the weights and the tokenizer); "
        "`tiny` checks the pipeline without any download.",
    ),
    _Rule(
        ("qlora_unavailable",),
        "",
        "QLoRA needs an NVIDIA GPU with bitsandbytes, and the machine that ran the job has none.",
        "set method to lora, or run the job on a forged with an NVIDIA GPU.",
    ),
    _Rule(
        ("checkpoint_mismatch",),
        "",
        "the job's checkpoints were written with different settings than the ones it resumed with.",
        "submit the job again as a new job (it starts from step 0 with the new settings).",
    ),
    _Rule(
        (
            "bad_spec",
            "bad_arguments",
            "bad_adapter",
        ),
        "",
        "a setting of the job is not valid (the error names it).",
        "correct that setting in forge.yaml (or on the command line) and resubmit; `forgectl plan` shows "
        "valid values.",
    ),
    _Rule(
        (),
        r"killed by sig(term|int|hup|abrt|segv|bus)",
        "the runner process was killed by a signal from outside forge (an administrator, a timeout, or a "
        "crash in native code).",
        "resubmit; if it happens again, check the system log (`journalctl -k`, `dmesg`) around the time the "
        "job stopped.",
    ),
)
_GENERIC = _Rule(
    (),
    "",
    "the runner stopped with an error forge has no specific rule for.",
    "read the full log with `forgectl logs JOB` (the last lines show the error); if it looks like a bug in "
    "forge, report it with that log.",
)


def offline(
    error_code: str, error: str, last_log_lines: Sequence[str], remedies_tried: Sequence[str]
) -> Diagnosis:
    """The rules' diagnosis: the first rule whose code or words match."""
    evidence = " ".join([error, *last_log_lines[-10:]]).lower()
    rule = next((r for r in _RULES if r.matches(error_code, evidence)), _GENERIC)
    cause = _sentence(rule.cause)
    if remedies_tried:
        n = len(remedies_tried)
        cause += f" Forge retried {n} time{'s' if n != 1 else ''} on its own first."
    return Diagnosis(cause=cause, fix=_sentence(rule.fix), brain=OFFLINE)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _prompt(error_code: str, error: str, last_log_lines: Sequence[str], remedies_tried: Sequence[str]) -> str:
    lines = list(last_log_lines[-LOG_LINES_SENT:])
    logs = "\n".join(lines)[-LOG_CHARS_SENT:]
    tried = "\n".join(f"- {r}" for r in remedies_tried) or "- none"
    # Log lines can quote training examples: redact before anything leaves the machine.
    return pii.redact(
        f"Error code: {error_code or 'none'}\nError: {error}\n\nAutomatic retries already made:\n{tried}\n\n"
        f"Last log lines:\n{logs}"
    )


def diagnose(
    error_code: str,
    error: str,
    last_log_lines: Sequence[str],
    remedies_tried: Sequence[str],
    brain: LLMBrain | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Diagnosis:
    """The brain's diagnosis when it answers usefully within `timeout_s`, else the offline rules'."""
    rules = offline(error_code, error, last_log_lines, remedies_tried)
    if brain is None:
        return rules
    result: list[DiagnosisAnswer] = []
    failure: list[str] = []

    def ask() -> None:
        try:
            result.append(
                brain.ask(
                    _SYSTEM, _prompt(error_code, error, last_log_lines, remedies_tried), DiagnosisAnswer
                )
            )
        except Exception as exc:  # any brain failure means the rules answer; never the job's problem
            failure.append(one_line(exc))

    # A thread, so a hanging brain costs at most `timeout_s`: the SDKs' timeouts bound one request, not
    # the retries and the re-ask together.
    worker = threading.Thread(target=ask, name="diagnosis", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        why = failure[0] if failure else f"no answer within {timeout_s:g}s"
        log.warning("diagnosis_fell_back_to_rules", brain=brain.describe(), reason=why)
        return rules
    answer = result[0]
    return Diagnosis(cause=one_line(answer.cause, 500), fix=one_line(answer.fix, 700), brain=brain.name)


@dataclass(frozen=True)
class _Choice:
    kind: str = ""
    model: str = ""
    endpoint: str = ""


class JobDiagnoser:
    """What the supervisor calls when a job fails for good: the job's own BrainChoice (JobSpec.brain; empty
    means the offline rules) with its owner's key, bounded by `timeout_s`."""

    def __init__(self, brains: BrainSelector | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.brains = brains
        self.timeout_s = timeout_s

    def __call__(
        self,
        choice: Mapping[str, Any] | None,
        owner: str,
        error_code: str,
        error: str,
        last_log_lines: Sequence[str],
        remedies_tried: Sequence[str],
    ) -> Diagnosis:
        brain: LLMBrain | None = None
        picked = _Choice(
            **{k: str(v) for k, v in (choice or {}).items() if k in ("kind", "model", "endpoint")}
        )
        if self.brains is not None and picked.kind.strip():
            try:
                brain = self.brains.brain_for(picked, owner, timeout_s=self.timeout_s)
            except (BrainError, BrainChoiceError) as exc:
                log.warning("diagnosis_brain_unavailable", kind=picked.kind, reason=str(exc))
        try:
            return diagnose(error_code, error, last_log_lines, remedies_tried, brain, self.timeout_s)
        except Exception:  # the rules themselves failing is a bug, but it must not keep a job from ending
            log.exception("diagnosis_failed")
            return Diagnosis(cause=_sentence(_GENERIC.cause), fix=_sentence(_GENERIC.fix))
