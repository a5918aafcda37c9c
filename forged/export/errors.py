"""The one exception export raises for bad input: its message is a single line a user can act on."""

from __future__ import annotations


class ExportError(Exception):
    """A model, tokenizer or option that cannot be exported; str(e) says what is wrong and what to do."""
