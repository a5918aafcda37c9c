"""Which token ends an assistant turn, read from the model's own chat template.

The one place that answers it: training keeps that token out of padding (and trains it), and export writes
it as GGUF's end-of-turn token and checks that llama.cpp stops on it. It is the token a fine-tuned model
learned to emit, whatever the tokenizer calls its "eos".
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

_MARKER = "Forge-end-of-turn-probe"


def end_of_turn_token(tokenizer: Any) -> tuple[int, str] | None:
    """(id, text) of the special token the template writes right after an assistant message, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except TemplateError:  # a template that insists on other roles: no marker to learn from
        return None
    if not isinstance(text, str) or _MARKER not in text:
        return None
    tail = text[text.rindex(_MARKER) + len(_MARKER) :].lstrip()
    specials = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for content in sorted(specials, key=len, reverse=True):
        if content and tail.startswith(content):
            return specials[content], content
    return None
