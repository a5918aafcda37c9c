"""Rendering and loss masks with the real tiny tokenizer (SmolLM2's, ChatML template)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from runner_testlib import TRAIN
from transformers import PreTrainedTokenizerBase

from runner_image.data import (
    IGNORE_INDEX,
    ChatRow,
    collate,
    ensure_pad_token,
    epoch_order,
    load_dataset,
    read_rows,
    render,
    tokenize_example,
)
from runner_image.errors import EXIT_BAD_INPUT, RunnerError
from runner_image.tiny import build_tiny_model, load_tiny_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What color is the sky?"},
    {"role": "assistant", "content": "The sky is blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Grass is green."},
]


def _trained_segments(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int]) -> list[str]:
    """Decode each maximal run of trained tokens."""
    segments: list[list[int]] = []
    current: list[int] = []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # a trained position's label is the token itself (the shift is in the loss)
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [tokenizer.decode(s) for s in segments]


def _chats(path: Path) -> list[list[dict[str, Any]]]:
    rows = read_rows(path)
    assert all(isinstance(r, ChatRow) for r in rows)
    return [r.messages for r in rows if isinstance(r, ChatRow)]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rendered_text_is_the_tokenizers_own_template(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    for messages in _chats(TRAIN):
        text = render(tiny_tokenizer, messages)
        assert text == tiny_tokenizer.apply_chat_template(messages, tokenize=False)
        example, truncated = tokenize_example(tiny_tokenizer, messages, 4096)
        assert not truncated
        # The ids are exactly that text, with no extra special tokens (no second BOS, no appended EOS).
        assert tiny_tokenizer.decode(example.input_ids) == text
        assert example.input_ids == list(tiny_tokenizer.apply_chat_template(messages)["input_ids"])


def test_only_assistant_turns_and_their_end_of_turn_are_trained(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    example, _ = tokenize_example(tiny_tokenizer, CONVERSATION, 4096)
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert _trained_segments(tiny_tokenizer, example.input_ids, example.labels) == [
        "The sky is blue.<|im_end|>",
        "Grass is green.<|im_end|>",
    ]
    # Two assistant end-of-turn tokens are trained; the system and user ones are not.
    trained_eot = [
        i for i, (t, y) in enumerate(zip(example.input_ids, example.labels, strict=True)) if y == eot
    ]
    all_eot = [i for i, t in enumerate(example.input_ids) if t == eot]
    assert len(trained_eot) == 2 and len(all_eot) == 5
    # The newline ChatML puts after <|im_end|> is not trained: the model stops at the marker.
    for i in trained_eot:
        assert example.labels[i + 1] == IGNORE_INDEX


def test_system_and_user_tokens_are_never_trained(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    for messages in _chats(TRAIN):
        example, _ = tokenize_example(tiny_tokenizer, messages, 4096)
        expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert _trained_segments(tiny_tokenizer, example.input_ids, example.labels) == expected


def test_default_system_prompt_of_the_template_is_not_trained(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    # SmolLM2's template inserts its own system prompt when there is none; it is prompt, not target.
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    example, _ = tokenize_example(tiny_tokenizer, messages, 4096)
    assert "SmolLM" in tiny_tokenizer.decode(example.input_ids)
    assert _trained_segments(tiny_tokenizer, example.input_ids, example.labels) == ["Hello.<|im_end|>"]


def test_pad_is_not_eos_after_setup(raw_tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    assert raw_tiny_tokenizer.pad_token_id == raw_tiny_tokenizer.eos_token_id  # as shipped by SmolLM2
    tokenizer = load_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    vocab_before = model.get_input_embeddings().weight.shape[0]
    grew = ensure_pad_token(tokenizer, model)
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id != tokenizer.bos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # An existing spare token was used, so the vocabulary (and the base model) is unchanged.
    assert not grew and model.get_input_embeddings().weight.shape[0] == vocab_before == len(tokenizer)


def test_bos_is_not_doubled(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    example, _ = tokenize_example(tiny_tokenizer, CONVERSATION, 4096)
    bos = tiny_tokenizer.bos_token_id
    assert example.input_ids[0] == bos and example.input_ids[1] != bos
    # A template that writes BOS itself in front of a BOS-like start is caught, not silently trained on.
    tokenizer = load_tiny_tokenizer()
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    with pytest.raises(RunnerError, match="doubled BOS"):
        tokenize_example(tokenizer, CONVERSATION, 4096)


def test_collate_pads_with_pad_and_masks_padding(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    short, _ = tokenize_example(tiny_tokenizer, CONVERSATION[1:3], 4096)
    long, _ = tokenize_example(tiny_tokenizer, CONVERSATION, 4096)
    batch = collate([short, long], int(tiny_tokenizer.pad_token_id))
    n = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(long.input_ids))  # padded to the longest in the batch
    assert (batch["input_ids"][0, n:] == tiny_tokenizer.pad_token_id).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].sum() == n and batch["attention_mask"][1].all()


def test_truncation_drops_examples_with_nothing_left_to_train(
    tiny_tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    long_answer = {"role": "assistant", "content": "word " * 200}
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
        {"messages": [{"role": "user", "content": "filler " * 100}, long_answer]},
        {"messages": [{"role": "user", "content": "no answer here"}]},
    ]
    ds = load_dataset(_write_jsonl(tmp_path / "t.jsonl", rows), tiny_tokenizer, max_seq_len=64)
    assert len(ds.examples) == 1
    assert ds.truncated == 1 and ds.dropped_truncated == 1 and ds.dropped_no_assistant == 1
    assert all(len(e.input_ids) <= 64 for e in ds.examples)
    assert any("dropped 1 examples with no assistant turn" in n for n in ds.notes)


def test_all_masked_dataset_is_bad_data(tiny_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    with pytest.raises(RunnerError) as info:
        load_dataset(_write_jsonl(tmp_path / "t.jsonl", rows), tiny_tokenizer, max_seq_len=64)
    assert info.value.code == "no_trainable_examples" and info.value.exit_code == EXIT_BAD_INPUT


def test_weight_zero_everywhere_is_bad_data(tiny_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    draft = {"role": "assistant", "content": "draft", "weight": 0}
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, draft]} for i in range(3)]
    with pytest.raises(RunnerError) as info:
        load_dataset(_write_jsonl(tmp_path / "t.jsonl", rows), tiny_tokenizer, max_seq_len=64)
    assert info.value.code == "no_trainable_examples" and "weight 1" in info.value.hint


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"prompt": "hi"}', 'line 2: expected an object with a "messages" list'),
        ('{"text": "  "}', 'line 2: "text" must be a non-empty string'),
        ('{"messages": [{"role": "user", "content": "x", "weight": 1}]}', "line 2: message 0 is a user turn"),
        (
            '{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}',
            "line 2: message 0 has weight 2",
        ),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "line 2: message 0 has role 'tool'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "line 2: message 0 content must be a string"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path: Path, line: str, needle: str) -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    path = tmp_path / "t.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(RunnerError, match=needle) as info:
        read_rows(path)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_epoch_order_is_a_seeded_permutation() -> None:
    a0, a1 = epoch_order(24, seed=7, epoch=0), epoch_order(24, seed=7, epoch=1)
    assert sorted(a0) == list(range(24))
    assert a0 == epoch_order(24, seed=7, epoch=0)
    assert a0 != a1 and a0 != epoch_order(24, seed=8, epoch=0)
    assert torch.tensor(a1).unique().numel() == 24


def test_a_model_without_chat_template_trains_text_but_refuses_conversations(tmp_path: Path) -> None:
    # A base (non-instruct) model: continued pre-training on text is what it is for; chat needs a template.
    tokenizer = load_tiny_tokenizer()
    ensure_pad_token(tokenizer)
    tokenizer.chat_template = None
    text = load_dataset(_write_jsonl(tmp_path / "text.jsonl", [{"text": "plain words " * 40}]), tokenizer, 32)
    assert text.examples and all(e.trained_tokens > 0 for e in text.examples)
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    with pytest.raises(RunnerError) as info:
        load_dataset(_write_jsonl(tmp_path / "chat.jsonl", chat), tokenizer, 64)
    assert info.value.code == "no_chat_template" and info.value.exit_code == EXIT_BAD_INPUT
    assert "chat template" in info.value.message
