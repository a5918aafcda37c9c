"""Which token ends an assistant turn, read from the model's own chat template.

The converter writes it as GGUF's end-of-turn token and the parity gate checks that llama.cpp stops on it:
it is the token a fine-tuned model learned to emit, whatever the tokenizer calls its "eos".
"""

from __future__ import annotations

from typing import Any

_MARKER = "Forge-end-of-turn-probe"


def end_of_turn_token(tokenizer: Any) -> tuple[int, str] | None:
    """(id, text) of the first special token the template writes after an assistant message, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    tail = text[text.rindex(_MARKER) + len(_MARKER) :].lstrip(" ")
    specials = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for content in sorted(specials, key=len, reverse=True):
        if content and tail.startswith(content):
            return specials[content], content
    return None


def template_markers(tokenizer: Any) -> list[str]:
    """Special-token texts that must never show up in generated text (the chat template's scaffolding)."""
    return sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content)
