"""The parity gate: does the GGUF in real llama.cpp behave like the merged HF model it came from?

For each prompt (a chat from the validation split, cut before its last assistant turn) it checks that
llama.cpp tokenizes the rendered chat exactly as the HF tokenizer does, that llama.cpp's next-token
log-probabilities along its own greedy continuation match HF's (teacher-forced on the same tokens) within a
tolerance for the output type, that for F16/F32/BF16 the greedy continuations are the same tokens, and that
no chat-template marker leaks into generated text. Once per model it forces the template's end-of-turn token
and checks llama.cpp stops on it. Nothing is registered unless `passed`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field

# Max |log p_llama.cpp - log p_HF| over llama.cpp's top-5 tokens at every compared position, in nats.
# Largest values measured for correct files over the tiny models of all seed families (float32 HF reference,
# CPU llama.cpp, 8 greedy steps): F32 0.006 and F16 0.006 (both bounded by llama.cpp's F16 KV cache), BF16
# 0.028, Q8_0 0.088, Q4_0 1.28. A llama file without the q/k permutation measured 0.7-1.3 and 8 nats
# once attention is position-sensitive. Each limit is 3-10x the correct maximum: F16/F32/BF16/Q8_0 tell a
# wrong layout from rounding; Q4_0's own error is as large as a layout error, so layouts are checked at F16.
TOLERANCE: dict[str, float] = {
    "f32": 0.05,
    "f16": 0.05,
    "bf16": 0.15,
    "q8_0": 0.25,
    "q4_0": 2.5,
}
# Output types whose greedy continuation must equal HF's token for token; quantised files may legitimately
# flip a near-tie, which the log-prob tolerance already bounds.
EXACT_GREEDY = frozenset({"f32", "f16", "bf16"})
SKIPPED_WARNING = (
    "PARITY GATE SKIPPED (--skip-verify): this GGUF was NOT compared with the merged model in llama.cpp; "
    "its tokenization, weights layout and stop token are unchecked"
)
TOP_K = 5
N_GREEDY = 8


class PromptCheck(BaseModel):
    index: int
    n_tokens: int
    tokens_match: bool
    first_token_mismatch: int | None = None
    max_logprob_diff: float
    greedy_hf: list[int]
    greedy_gguf: list[int]
    # Steps where HF's top token differs from llama.cpp's but HF rates llama.cpp's choice within twice the
    # tolerance of its own: a near-tie that rounding may break either way, so not evidence of a wrong file.
    greedy_ties: list[int] = []
    leaked: list[str]

    @property
    def greedy_same(self) -> bool:
        pairs = enumerate(zip(self.greedy_hf, self.greedy_gguf, strict=True))
        return all(a == b or j in self.greedy_ties for j, (a, b) in pairs)


class ParityReport(BaseModel):
    gguf: str
    out_type: str
    tolerance: float
    prompts: list[PromptCheck]
    end_of_turn: str | None
    end_of_turn_stops: bool | None
    failures: list[str]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return not self.failures and bool(self.prompts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def report(self) -> str:
        head = "PASSED" if self.passed else "FAILED"
        lines = [f"parity gate {head}: {Path(self.gguf).name} ({self.out_type}) vs the merged HF model"]
        for p in self.prompts:
            tok = "same" if p.tokens_match else f"DIFFERENT from token {p.first_token_mismatch}"
            greedy = "same" if p.greedy_same else "different"
            if p.greedy_same and p.greedy_ties:
                greedy += f" ({len(p.greedy_ties)} near-tie(s) broken differently)"
            lines.append(
                f"  prompt {p.index}: {p.n_tokens} tokens, tokenization {tok}, max |dlogp| "
                f"{p.max_logprob_diff:.4f} (limit {self.tolerance}), greedy {greedy}"
                + (f", leaked {p.leaked}" if p.leaked else "")
            )
        if self.end_of_turn is not None:
            stops = "stops generation" if self.end_of_turn_stops else "does NOT stop generation"
            lines.append(f"  end-of-turn {self.end_of_turn!r} {stops} in llama.cpp")
        lines += [f"  - {f}" for f in self.failures]
        return "\n".join(lines)


def prompt_messages(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to (not including) its last assistant turn: what the model is asked to answer."""
    messages = list(conversation)
    while messages and messages[-1].get("role") == "assistant":
        messages.pop()
    return messages


def verify(
    hf_dir: Path,
    gguf_path: Path,
    prompts: list[list[dict[str, Any]]],
    out_type: str,
    n_greedy: int = N_GREEDY,
) -> ParityReport:
    """Run the gate; the report lists every failed check in words (see module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    from forged.export.chat_turns import template_markers
    from forged.export.llamacpp import LlamaCpp
    from runner_image.chat_turns import end_of_turn_token
    from runner_image.hf_tokenizer import load_pretrained_tokenizer

    out_type = out_type.lower()
    tolerance = TOLERANCE[out_type]
    # The reference is the tokenization the runner trained on, loaded the way the runner loads it.
    tokenizer = load_pretrained_tokenizer(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, local_files_only=True)
    model.eval()
    markers = template_markers(tokenizer)
    eot = end_of_turn_token(tokenizer)
    rendered = [
        tokenizer.apply_chat_template(prompt_messages(c), tokenize=False, add_generation_prompt=True)
        for c in prompts
    ]
    hf_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    n_ctx = max(len(ids) for ids in hf_ids) + n_greedy + 16 if hf_ids else 64
    failures: list[str] = []
    checks: list[PromptCheck] = []
    eot_stops: bool | None = None
    with LlamaCpp(gguf_path, n_ctx=n_ctx) as llama:
        for i, (text, ids) in enumerate(zip(rendered, hf_ids, strict=True)):
            check = _check_prompt(i, text, ids, llama, model, markers, n_greedy, tolerance, out_type)
            checks.append(check)
            failures += _prompt_failures(check, tolerance, out_type)
        if eot is not None and hf_ids:
            eot_stops = _stops_on(llama, hf_ids[0], eot[0])
            if not eot_stops:
                failures.append(
                    f"the end-of-turn token {eot[1]!r} (id {eot[0]}) does not end generation in llama.cpp: "
                    "a chat would run on past the answer (check eos/eot ids in the GGUF metadata)"
                )
    if not prompts:
        failures.append("no prompts to compare: the validation split is empty")
    return ParityReport(
        gguf=str(gguf_path),
        out_type=out_type,
        tolerance=tolerance,
        prompts=checks,
        end_of_turn=eot[1] if eot else None,
        end_of_turn_stops=eot_stops,
        failures=failures,
    )


def _check_prompt(
    index: int,
    text: str,
    hf_ids: list[int],
    llama: Any,
    model: Any,
    markers: list[str],
    n_greedy: int,
    tolerance: float,
    out_type: str,
) -> PromptCheck:
    import torch

    gguf_ids = llama.tokenize(text, add_special=False)
    mismatch = next((j for j, (a, b) in enumerate(zip(hf_ids, gguf_ids, strict=False)) if a != b), None)
    if mismatch is None and len(hf_ids) != len(gguf_ids):
        mismatch = min(len(hf_ids), len(gguf_ids))
    # Both sides continue the HF token ids, so a tokenizer difference cannot hide a weights difference.
    result = llama.complete(hf_ids, n_predict=n_greedy, n_probs=TOP_K)
    steps = result.get("completion_probabilities") or []
    gguf_greedy = [int(s["id"]) for s in steps]
    with torch.no_grad():
        seq = torch.tensor([hf_ids + gguf_greedy])
        logprobs = torch.log_softmax(model(seq).logits[0].float(), dim=-1)
    start = len(hf_ids) - 1
    max_diff = 0.0
    for j, step in enumerate(steps):
        row = logprobs[start + j]
        for top in step["top_logprobs"]:
            if math.isfinite(top["logprob"]):
                max_diff = max(max_diff, abs(float(top["logprob"]) - float(row[int(top["id"])])))
    hf_greedy = [int(logprobs[start + j].argmax()) for j in range(len(steps))]
    # Both sides saw the same prefix at every step (HF is teacher-forced on llama.cpp's tokens), so a step can
    # be judged on its own: a differing choice is a tie when HF itself nearly prefers llama.cpp's token.
    ties = [
        j
        for j, (h, g) in enumerate(zip(hf_greedy, gguf_greedy, strict=True))
        if h != g and float(logprobs[start + j, h] - logprobs[start + j, g]) <= 2 * tolerance
    ]
    content = str(result.get("content", ""))
    return PromptCheck(
        index=index,
        n_tokens=len(hf_ids),
        tokens_match=mismatch is None,
        first_token_mismatch=mismatch,
        max_logprob_diff=max_diff,
        greedy_hf=hf_greedy,
        greedy_gguf=gguf_greedy,
        greedy_ties=ties,
        leaked=[m for m in markers if m in content],
    )


def _prompt_failures(c: PromptCheck, tolerance: float, out_type: str) -> list[str]:
    failures = []
    if not c.tokens_match:
        failures.append(
            f"prompt {c.index}: llama.cpp tokenizes the chat differently from token {c.first_token_mismatch} "
            "(tokenizer metadata: pre-tokenizer, scores or special tokens)"
        )
    if c.max_logprob_diff > tolerance:
        failures.append(
            f"prompt {c.index}: next-token log-probabilities differ by up to {c.max_logprob_diff:.3f} nats "
            f"(limit {tolerance} for {out_type}): the weights or their layout are wrong"
        )
    if out_type in EXACT_GREEDY and not c.greedy_same:
        failures.append(
            f"prompt {c.index}: greedy continuation differs: HF {c.greedy_hf} vs GGUF {c.greedy_gguf}"
        )
    if c.leaked:
        failures.append(f"prompt {c.index}: template tokens leak into generated text: {c.leaked}")
    return failures


def _stops_on(llama: Any, prompt: list[int], eot_id: int) -> bool:
    """Force the end-of-turn token as the first choice; llama.cpp must stop right there, printing nothing."""
    result = llama.complete(prompt, n_predict=4, n_probs=0, logit_bias=[[eot_id, 1000.0]])
    return result.get("stop_type") == "eos" and int(result.get("tokens_predicted", 0)) <= 1
