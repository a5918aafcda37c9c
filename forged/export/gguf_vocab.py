"""Tokenizer metadata for GGUF, from the model directory's tokenizer.json (what transformers saves).

Two tokenizer families reach llama.cpp: byte-level BPE ("gpt2": SmolLM, Llama 3, Qwen2), whose behaviour is
its merges plus a named pre-tokenizer, and SentencePiece-style BPE with byte fallback ("llama": TinyLlama,
Mistral, Phi-3, Gemma), whose behaviour is its piece scores. Special tokens, add_bos and the chat template
come through gguf's SpecialVocab, the same reader llama.cpp's own converter uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from forged.export.errors import ExportError
from runner_image.chat_turns import end_of_turn_token

# llama.cpp picks its pre-tokenizer regex by name; the name follows from the HF pre-tokenizer's regex.
_SPLIT_REGEX_PRE: dict[str, str] = {
    # Llama 3.x
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    # Qwen2 / Qwen2.5: the same but one digit at a time
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def bpe_pre_tokenizer(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer, or ExportError."""
    steps = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own regex (transformers 5 re-saves GPT2Tokenizer-class tokenizers so)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        name = _SPLIT_REGEX_PRE.get((steps[0].get("pattern") or {}).get("Regex", ""))
        if name is not None:
            return name
    raise ExportError(
        "the tokenizer's pre-tokenizer is not one llama.cpp knows by name "
        "(known: gpt-2, smollm, llama-bpe, qwen2); export a model that uses its family's original tokenizer"
    )


def add_tokenizer(writer: Any, hf_dir: Path, n_vocab: int) -> None:
    """Write tokens, types, scores or merges, special ids, add_bos/eos and the chat template."""
    import gguf

    from runner_image.hf_tokenizer import load_pretrained_tokenizer

    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(
            f"{hf_dir} has no tokenizer.json; save the tokenizer with the model (save_pretrained)"
        )
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    # The tokenizer the runner trained with (a legacy SentencePiece file runs as written), not a rebuilt one
    hf_tok = load_pretrained_tokenizer(hf_dir)
    if len(hf_tok) > n_vocab:
        raise ExportError(f"the tokenizer has {len(hf_tok)} tokens but the model only {n_vocab} embeddings")

    is_bpe = model.get("type") == "BPE" and not model.get("byte_fallback")
    if is_bpe:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(bpe_pre_tokenizer(tj.get("pre_tokenizer")))
        tokens, scores, types = _bpe_tokens(tj, n_vocab)
    elif model.get("type") == "BPE":
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        tokens, scores, types = _spm_tokens(tj, n_vocab, hf_tok.unk_token_id)
        writer.add_add_space_prefix(_adds_space_prefix(tj))
    else:
        raise ExportError(
            f"tokenizer model {model.get('type')!r} is not supported for GGUF export "
            "(Forge writes byte-level BPE and SentencePiece-style BPE tokenizers)"
        )
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)

    special = gguf.SpecialVocab(hf_dir, load_merges=is_bpe, n_vocab=n_vocab)
    # What the HF tokenizer actually does beats SpecialVocab's reading of the post-processor template.
    ids = hf_tok("a")["input_ids"]
    special.add_special_token["bos"] = hf_tok.bos_token_id is not None and ids[:1] == [hf_tok.bos_token_id]
    special.add_special_token["eos"] = hf_tok.eos_token_id is not None and ids[-1:] == [hf_tok.eos_token_id]
    special.add_to_gguf(writer, quiet=True)
    eot = end_of_turn_token(hf_tok)
    if eot is not None:
        writer.add_eot_token_id(eot[0])


def _bpe_tokens(tj: dict[str, Any], n_vocab: int) -> tuple[list[str], None, list[int]]:
    import gguf

    by_id: dict[int, str] = {i: t for t, i in tj["model"]["vocab"].items()}
    kinds: dict[int, int] = {}
    for added in tj.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, types = [], []
    for i in range(n_vocab):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(kinds.get(i, gguf.TokenType.NORMAL))
        else:
            # embeddings beyond the tokenizer (Qwen pads to a multiple of 64): placeholders llama.cpp ignores
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, None, types


def _spm_tokens(
    tj: dict[str, Any], n_vocab: int, unk_id: int | None
) -> tuple[list[str], list[float], list[int]]:
    """SentencePiece pieces; scores rebuilt from the merge order, which is all llama.cpp's SPM merger reads.

    llama.cpp merges the adjacent pair whose joined piece has the highest score; HF's BPE applies the
    lowest-ranked merge. A piece's score of -rank of the merge that makes it gives the same order.
    """
    import gguf

    model = tj["model"]
    rank: dict[str, int] = {}
    for r, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    kinds: dict[int, int] = {}
    for added in tj.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        piece = by_id.get(i)
        if piece is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1e9)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(piece)
        # a multi-character piece no merge produces must never win a merge in llama.cpp either
        scores.append(-float(rank[piece]) if piece in rank else (0.0 if len(piece) == 1 else -1e9))
        if i == unk_id:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in kinds:
            types.append(kinds[i])
        elif _BYTE_TOKEN.fullmatch(piece):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def _adds_space_prefix(tj: dict[str, Any]) -> bool:
    """SentencePiece's dummy prefix, as llama.cpp applies it: at the start and after every special token.

    That is the legacy Prepend('▁') normalizer, which the runner keeps (runner_image/hf_tokenizer.py), so a
    model Forge trained from TinyLlama or Phi-3 gets it. Metaspace with prepend_scheme "first" (a prefix only
    at the very start of the input: Mistral v0.3 ships it, and transformers 5 saves rebuilt legacy tokenizers
    so) cannot be expressed in llama.cpp; of its two settings, "no prefix" differs from it only when a text
    starts with plain text instead of a special token, where "prefix" would differ after every special token.
    """
    normalizer = tj.get("normalizer") or {}
    for step in normalizer.get("normalizers") or [normalizer]:
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
    pre = tj.get("pre_tokenizer") or {}
    for step in pre.get("pretokenizers") or [pre]:
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") == "always" and step.get("add_prefix_space", True)
    return False
