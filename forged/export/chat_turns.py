"""The chat template's scaffolding tokens. (The token that ends an assistant turn is decided in one place,
runner_image.chat_turns, which training uses too.)"""

from __future__ import annotations

from typing import Any


def template_markers(tokenizer: Any) -> list[str]:
    """Special-token texts that must never show up in generated text (the chat template's scaffolding)."""
    return sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content)
