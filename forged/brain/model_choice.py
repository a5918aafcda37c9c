"""The offline rules' model choice: the PRD's use-case mapping, the data's languages, and the GPU memory free.

Customer support goes to Qwen (multilingual, conversational), code to Llama or Phi, small deployments to
SmolLM or TinyLlama. Within a use case the preference order runs from the model the PRD names down to
smaller ones, and the first whose LoRA run fits the free GPU memory (less headroom) wins; QLoRA is the
fallback when none fits in 16 bits. Without an NVIDIA GPU nothing real can train here, so the answer is the
built-in pipeline check, and the reason names what a GPU box would get.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forge.catalog import GIB, Method, load_catalog

# Free memory forged keeps back on the GPU: the CUDA context, the allocator's fragmentation, a tokenizer.
VRAM_HEADROOM = 0.10


@dataclass(frozen=True)
class UseCase:
    name: str
    pattern: re.Pattern[str]
    models: tuple[str, ...]  # catalog names, in order of preference
    why: str


_SUPPORT = UseCase(
    "customer support",
    re.compile(
        r"\b(support|customer|client|ticket|help ?desk|faq|service|shop|store|order|refund)s?\b", re.I
    ),
    ("qwen2.5-3b", "qwen2.5-1.5b", "qwen2.5-0.5b"),
    "Qwen is multilingual and conversational",
)
_CODE = UseCase(
    "code",
    re.compile(
        r"\b(code|coding|sql|program\w*|python|javascript|typescript|rust|java|bash|shell|regex|function|"
        r"api|developer|debug\w*|query|queries)\b",
        re.I,
    ),
    ("llama-3.2-3b", "phi-3-mini", "llama-3.2-1b"),
    "Llama and Phi reason well about code",
)
_SMALL = UseCase(
    "a small deployment",
    re.compile(
        r"\b(small|edge|mobile|phone|raspberry|embedded|on-device|lightweight|offline|laptop|cpu)\b", re.I
    ),
    ("smollm2-1.7b", "tinyllama-1.1b", "smollm2-360m", "smollm2-135m"),
    "SmolLM and TinyLlama are small enough to deploy anywhere",
)
_GENERAL = UseCase(
    "a general assistant",
    re.compile(r"$^"),
    ("qwen2.5-3b", "llama-3.2-3b", "qwen2.5-1.5b", "llama-3.2-1b", "smollm2-1.7b"),
    "Qwen and Llama are strong general chat models at this size",
)
# Small first: "a small support bot for edge devices" is a deployment constraint before it is a topic.
USE_CASES: tuple[UseCase, ...] = (_SMALL, _CODE, _SUPPORT)
_MULTILINGUAL = ("qwen2.5-3b", "qwen2.5-1.5b", "qwen2.5-0.5b")
# When nothing the use case prefers fits: the catalog's smallest, still real models.
_LAST_RESORT = ("qwen2.5-0.5b", "smollm2-360m", "smollm2-135m")


@dataclass(frozen=True)
class Choice:
    model: str  # a catalog name, or the pipeline check
    method: Method | None  # None: the planner's usual rule decides
    reason: str


def use_case(goal: str) -> UseCase:
    return next((u for u in USE_CASES if u.pattern.search(goal)), _GENERAL)


def choose(
    goal: str,
    languages: Sequence[str],
    free_vram: int | None,
    cuda: bool,
    pipeline_check: str,
    needs: Callable[[str, Method], int],
) -> Choice:
    """The model for `goal`. `needs(model_name, method) -> bytes` is the planner's memory estimate."""
    case = use_case(goal)
    others = [lang for lang in languages if lang != "en"]
    order = list(case.models)
    why = f"for {case.name}, {case.why}"
    if others and case is not _SMALL:
        order = [*_MULTILINGUAL, *(m for m in order if m not in _MULTILINGUAL)]
        why += f"; the data is partly {', '.join(others)}, and Qwen is the multilingual family"
    if not cuda:
        first = load_catalog().find_model(order[0])
        named = first.short_name if first is not None and first.short_name else order[0]
        return Choice(
            pipeline_check,
            None,
            f"no NVIDIA GPU here, so the built-in '{pipeline_check}' pipeline check (random weights that "
            f"learn the data's format and nothing else); on a GPU the plan picks {order[0]} {why} "
            f"(--model {named})",
        )
    budget = int(free_vram * (1 - VRAM_HEADROOM)) if free_vram else None
    candidates = [*order, *(m for m in _LAST_RESORT if m not in order)]
    for method in ("lora", "qlora"):
        for name in candidates:
            need = needs(name, method)
            if budget is None or need <= budget:
                room = (
                    f"{need / GIB:.1f} GiB of the {free_vram / GIB:.1f} GiB free" if free_vram else "memory"
                )
                how = "" if method == "lora" else " in 4 bits (QLoRA), since no model fits in 16"
                fallback = "" if name in order else f" (none of {', '.join(order)} fits)"
                return Choice(name, method, f"{why}; the largest that fits{fallback}: needs {room}{how}")
    return Choice(
        pipeline_check,
        None,
        f"no catalog model fits the {(free_vram or 0) / GIB:.1f} GiB free on this GPU even in 4 bits, so the "
        f"built-in '{pipeline_check}' pipeline check; free GPU memory or use a bigger GPU",
    )
