"""Rendering, loss masks and the formatting pre-flight, per model family, with each family's real tokenizer.

Expectations are computed here from facts about each template (the marker that closes an assistant turn),
not from the masking code: a token is trained exactly when it overlaps the characters of a trained assistant
reply plus that marker in the rendered text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from runner_image.data import (
    IGNORE_INDEX,
    Dataset,
    ensure_pad_token,
    load_dataset,
    render,
    tokenize_documents,
    tokenize_example,
)
from runner_image.errors import RunnerError
from runner_image.format_check import CODE, check_format, render_trained
from runner_image.tiny import FAMILIES, load_tokenizer
from runner_image.tiny_tokenizers import tokenizer_dir


@dataclass(frozen=True)
class Template:
    end: str  # what the family's template writes right after an assistant reply
    closing: str = ""  # what it writes after the last assistant reply only (Phi-3 closes with EOS)
    # SentencePiece's dummy prefix starts every stretch of text after a special token (legacy Llama 2
    # tokenizers); decoded, it is a space after the special token that the template did not write.
    prefix_after_special: bool = False


# Facts about each family's chat template, written down here rather than derived from the code under test.
TEMPLATES: dict[str, Template] = {
    "smollm": Template("<|im_end|>"),
    "tinyllama": Template("</s>", prefix_after_special=True),
    "llama": Template("<|eot_id|>"),
    "qwen": Template("<|im_end|>"),
    "phi": Template("<|end|>", closing="\n<|endoftext|>"),
    "gemma": Template("<end_of_turn>"),
    "gemma2": Template("<end_of_turn>"),
    "mistral": Template("</s>"),
}


def test_every_tiny_family_has_its_template_facts_here() -> None:
    assert set(TEMPLATES) == set(FAMILIES)


# No system turn: Gemma's and Mistral's templates do not take one where others put it.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Let me think about it.", "weight": 0},
    {"role": "user", "content": "Just the answer."},
    {"role": "assistant", "content": "Paris.", "weight": 1},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, of course."},
]


@cache
def tokenizer_for(family: str) -> PreTrainedTokenizerBase:
    """As the runner uses it: with a pad token of its own. Shared by the tests: do not modify."""
    tokenizer = load_tokenizer(family)
    ensure_pad_token(tokenizer)
    return tokenizer


def expected_spans(text: str, messages: list[dict[str, Any]], family: Template) -> list[tuple[int, int]]:
    """Character spans of each trained reply plus its end marker, found left to right in the text."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        target = m["content"] + family.end + (family.closing if i == last else "")
        start = text.index(target, cursor)
        cursor = start + len(target)
        if m.get("weight", 1) == 1:
            spans.append((start, cursor))
    return spans


@pytest.mark.parametrize("family", FAMILIES)
def test_training_text_is_the_template_and_labels_are_the_assistant_turns(family: str) -> None:
    tokenizer = tokenizer_for(family)
    plain = [{"role": m["role"], "content": m["content"]} for m in CONVERSATION]
    text = tokenizer.apply_chat_template(plain, tokenize=False)
    assert render(tokenizer, CONVERSATION) == text

    example, truncated = tokenize_example(tokenizer, CONVERSATION, 4096)
    assert not truncated
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    adds_bos = tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    if adds_bos and ids[0] != tokenizer.bos_token_id:
        ids, offsets = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets]
    assert example.input_ids == ids
    # The decoded training text is the template's text (plus the BOS the tokenizer adds for inference).
    # Phi-3's tokenizer cannot give that back: its special tokens swallow the newline after them (rstrip),
    # at inference too; the ids above are the check there.
    added_bos = adds_bos and not text.startswith(tokenizer.bos_token)
    assert (example.input_ids[0] == tokenizer.bos_token_id) == (
        added_bos or text.startswith(str(tokenizer.bos_token))
    )
    if family != "phi":
        # Decoded apart from the added BOS: SentencePiece decodes "<s>" followed by text with a space between.
        decoded = tokenizer.decode(example.input_ids[int(added_bos) :])
        if TEMPLATES[family].end and TEMPLATES[family].prefix_after_special:
            end = TEMPLATES[family].end
            decoded = decoded.replace(f"{end} ", end)
        assert decoded == text

    spans = expected_spans(text, CONVERSATION, TEMPLATES[family])
    expected = [
        token if any(a < e and b > s for s, e in spans) and b > a else IGNORE_INDEX
        for token, (a, b) in zip(ids, offsets, strict=True)
    ]
    assert example.labels == expected
    # The trained runs are the two weight-1 replies, each closed by the family's end-of-turn token.
    end_id = tokenizer.convert_tokens_to_ids(TEMPLATES[family].end)
    runs = [i for i, y in enumerate(example.labels) if y != IGNORE_INDEX]
    assert sum(1 for i in runs if example.input_ids[i] == end_id) == 2
    assert "Let me think" not in tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])


# Llama 2's SentencePiece vocabulary (TinyLlama's, and Phi-3's below its added tokens) on plain text, from
# llama.cpp's tokenizer test vectors (ggml-vocab-llama-spm and -phi-3 .inp/.out): a leading space is
# SentencePiece's dummy prefix plus a space. transformers 5's rebuilt tokenizer drops one "▁" there.
LLAMA_SPM_VECTORS = {
    "Hello world": [15043, 3186],
    " Hello world": [29871, 15043, 3186],
    "  Hello": [259, 15043],
    "    Hello\n    Hello": [268, 15043, 13, 1678, 15043],
}


@pytest.mark.parametrize("family", ["tinyllama", "phi"])
def test_sentencepiece_families_tokenize_text_as_sentencepiece_does(family: str) -> None:
    tokenizer = tokenizer_for(family)
    for text, ids in LLAMA_SPM_VECTORS.items():
        # What tokenize_documents and tokenize_example run on every document and chat segment
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text


def test_tinyllama_chat_has_the_dummy_prefix_after_every_special_token() -> None:
    """TinyLlama was trained with its tokenizer.json run as written (transformers 4): SentencePiece's dummy
    prefix at the start of every stretch of text between special tokens, as llama.cpp also tokenizes it.
    transformers 5 would rebuild it with a prefix only at the very start of the input."""
    tokenizer = tokenizer_for("tinyllama")
    example, _ = tokenize_example(tokenizer, CONVERSATION, 4096)
    plain = [{"role": m["role"], "content": m["content"]} for m in CONVERSATION]
    text = tokenizer.apply_chat_template(plain, tokenize=False)
    as_written = Tokenizer.from_file(str(tokenizer_dir("tinyllama") / "tokenizer.json"))
    assert example.input_ids == [
        tokenizer.bos_token_id,
        *as_written.encode(text, add_special_tokens=False).ids,
    ]
    pieces = tokenizer.convert_ids_to_tokens(example.input_ids)
    after_eos = [pieces[i + 1] for i, piece in enumerate(pieces[:-1]) if piece == "</s>"]
    assert len(after_eos) == text.count("</s>") == 6 and set(after_eos) == {"\u2581"}


@pytest.mark.parametrize("family", FAMILIES)
def test_format_check_passes_and_shows_the_mask(family: str) -> None:
    tokenizer = tokenizer_for(family)
    example, _ = tokenize_example(tokenizer, CONVERSATION, 4096)
    report = check_format(Dataset([example], ["chat"]), tokenizer, 4096)
    assert report.trained_tokens == example.trained_tokens < report.total_tokens == len(example.input_ids)
    end = TEMPLATES[family].end
    shown = render_trained(tokenizer, example)
    assert f"Paris.{end}⟧" in shown.replace("⟦ ", "⟦")
    assert "⟦Let me think" not in shown.replace("⟦ ", "⟦")


@pytest.mark.parametrize("family", FAMILIES)
def test_format_check_rejects_padding_with_end_of_turn(family: str) -> None:
    tokenizer = tokenizer_for(family)
    example, _ = tokenize_example(tokenizer, CONVERSATION, 4096)
    pad = tokenizer.pad_token
    # As most of these tokenizers ship (SmolLM2, TinyLlama, Phi-3 pad with EOS); restored for the other tests.
    tokenizer.pad_token = TEMPLATES[family].end
    try:
        with pytest.raises(RunnerError) as info:
            check_format(Dataset([example], ["chat"]), tokenizer, 4096)
    finally:
        tokenizer.pad_token = pad
    assert info.value.code == CODE and "end-of-turn" in info.value.message


@pytest.mark.parametrize("family", FAMILIES)
def test_format_check_rejects_an_all_masked_dataset(family: str) -> None:
    tokenizer = tokenizer_for(family)
    drafts = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in CONVERSATION]
    example, _ = tokenize_example(tokenizer, drafts, 4096)
    assert all(y == IGNORE_INDEX for y in example.labels)
    with pytest.raises(RunnerError) as info:
        check_format(Dataset([example], ["chat"]), tokenizer, 4096)
    assert info.value.code == CODE and "fully masked" in info.value.message


@pytest.mark.parametrize("family", FAMILIES)
def test_text_documents_are_one_stream_cut_into_full_chunks(family: str) -> None:
    tokenizer = tokenizer_for(family)
    docs = ["First Citizen:\nBefore we proceed any further, hear me speak.", "All:\nSpeak, speak."]
    chunks = tokenize_documents(tokenizer, docs, max_seq_len=8)
    adds_bos = tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    expected: list[int] = []
    for doc in docs:
        # Each document as inference would see it on its own: the tokenizer's BOS (if any), then EOS.
        expected += [tokenizer.bos_token_id] if adds_bos else []
        expected += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # A final chunk of one token predicts nothing, so it is the only thing left out.
    kept = expected[:-1] if len(expected) % 8 == 1 else expected
    assert [t for c in chunks for t in c.input_ids] == kept
    assert all(len(c.input_ids) == 8 for c in chunks[:-1]) and 2 <= len(chunks[-1].input_ids) <= 8
    assert all(c.labels == c.input_ids for c in chunks)  # every token is a target
    report = check_format(Dataset(chunks, ["text"] * len(chunks)), tokenizer, 8)
    assert report.text_chunks == len(chunks) and report.chat_examples == 0


# Whether each family's real template has a system turn that stays where it was written.
TAKES_SYSTEM = {"smollm": True, "tinyllama": True, "llama": True, "qwen": True, "phi": True,
                "gemma": False, "gemma2": False, "mistral": False}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_system_prompts_train_on_every_family(family: str, tmp_path: Path) -> None:
    tokenizer = tokenizer_for(family)
    conv = [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "And Spain?"},
        {"role": "assistant", "content": "Madrid."},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": conv}) + "\n")
    ds = load_dataset(path, tokenizer, 512)
    (example,) = ds.examples
    text = tokenizer.decode(example.input_ids)
    # Nothing of the system prompt is lost, whichever way the template takes it.
    assert "You answer in French." in text
    if TAKES_SYSTEM[family]:
        assert ds.folded_system == 0
    else:
        # Gemma refuses a system role and Mistral moves it to the last user turn: it opens the first user
        # turn instead, the data says so, and both replies are still trained.
        assert ds.folded_system == 1 and any("system prompt" in n for n in ds.notes)
        assert text.index("You answer in French.") < text.index("Capital of Italy?")
    trained = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert "Rome." in trained and "Madrid." in trained and "French" not in trained
