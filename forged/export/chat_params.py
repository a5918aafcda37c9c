"""How Ollama should chat with an exported model, read from the model's own tokenizer and chat template.

Ollama's templates are Go templates, not Jinja, so a template is only written for the families whose turn
format is known here (ChatML, Llama 3, Gemma, Phi-3); for any other, Ollama derives one from the chat
template stored in the GGUF. The stop list holds every token that ends a turn, so generation never runs on
into a made-up next turn. A default system prompt that the Jinja template injects when a conversation has
none (SmolLM2's does) becomes Ollama's SYSTEM, so Ollama renders conversations the way training did.
Runs in the export worker: it loads a tokenizer (transformers), which forged itself never imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forged.export.ollama import ChatParams

# Ollama's `.Messages` includes the system message (its SYSTEM when the chat has none), so none of these
# templates handles `.System` separately.
GO_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "gemma": (
        '{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}user{{ end }}\n'
        "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
    ),
    "phi3": "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
}
_FAMILY_MARKERS = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|assistant|>", "phi3"),
)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
_S, _U = "\x00forge-system\x00", "\x00forge-user\x00"


def template_family(chat_template: str) -> str | None:
    return next((family for marker, family in _FAMILY_MARKERS if marker in chat_template), None)


def stop_tokens(tokenizer: Any, generation_eos: list[int]) -> list[str]:
    """The EOS token(s) and every end-of-turn marker the chat template writes, without repeats."""
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    found: list[str] = []
    for token_id in [tokenizer.eos_token_id, *generation_eos]:
        if token_id is not None:
            found.append(tokenizer.convert_ids_to_tokens(int(token_id)))
    found += [marker for marker in END_OF_TURN if marker in vocab and marker in template]
    return list(dict.fromkeys(t for t in found if t))


def default_system(tokenizer: Any) -> str | None:
    """The system prompt the template adds when a conversation has none, if it adds one.

    Render the same user turn with and without a system message: the template's system wrapper is what
    surrounds our probe, and whatever sits in that wrapper in the system-less rendering is the default.
    """
    try:
        with_sys = tokenizer.apply_chat_template(
            [{"role": "system", "content": _S}, {"role": "user", "content": _U}], tokenize=False
        )
        without = tokenizer.apply_chat_template([{"role": "user", "content": _U}], tokenize=False)
    except Exception:  # a template that rejects a system role has no system default either
        return None
    if _S not in with_sys:
        return None
    before, after = with_sys.split(_S, 1)
    if not without.startswith(before) or not after or not without.endswith(after):
        return None
    default = without[len(before) : len(without) - len(after)]
    return default or None


def chat_params(hf_dir: Path) -> ChatParams:
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    try:
        eos = GenerationConfig.from_pretrained(str(hf_dir), local_files_only=True).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    eos_ids = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    family = template_family(tokenizer.chat_template or "")
    return ChatParams(
        template=GO_TEMPLATES.get(family) if family else None,
        stop=stop_tokens(tokenizer, eos_ids),
        system=default_system(tokenizer),
    )
