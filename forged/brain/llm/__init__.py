"""LLM brains (Gemini, an OpenAI-compatible local LLM) behind one interface, their keys, and the choice
between them and the offline rules. Every answer is validated; every failure is one of base.BrainError's."""

from forged.brain.llm.base import (
    BrainAnswerInvalid,
    BrainError,
    BrainQuotaExhausted,
    BrainUnavailable,
    LLMBrain,
)
from forged.brain.llm.select import OFFLINE, BrainDefaults, BrainSelector

__all__ = [
    "OFFLINE",
    "BrainAnswerInvalid",
    "BrainDefaults",
    "BrainError",
    "BrainQuotaExhausted",
    "BrainSelector",
    "BrainUnavailable",
    "LLMBrain",
]
