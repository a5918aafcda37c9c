"""The formatting pre-flight's rules, each broken on purpose, with the tiny model's real tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import PreTrainedTokenizerBase

from runner_image.data import Dataset, Example, tokenize_example
from runner_image.errors import EXIT_BAD_INPUT, RunnerError
from runner_image.format_check import CODE, SHOWN_CHARS, check_format, format_preflight, render_trained
from runner_image.tiny import load_tiny_tokenizer

CHAT = [
    {"role": "user", "content": "What color is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green."},
]
# ChatML with no end-of-turn marker after assistant replies: renders fine, trains a model that never stops
NO_END_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{% if m['role'] != 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def failure(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_len: int = 4096) -> RunnerError:
    with pytest.raises(RunnerError) as info:
        check_format(ds, tokenizer, max_seq_len)
    assert info.value.code == CODE and info.value.exit_code == EXIT_BAD_INPUT and info.value.hint
    return info.value


def test_preflight_logs_the_mask_and_the_ratio(
    tiny_tokenizer: PreTrainedTokenizerBase, capsys: pytest.CaptureFixture[str]
) -> None:
    example, _ = tokenize_example(tiny_tokenizer, CHAT, 4096)
    report = format_preflight(Dataset([example], ["chat"]), tiny_tokenizer, 4096)
    logs = [json.loads(line)["log"]["message"] for line in capsys.readouterr().out.splitlines()]
    assert logs[0].startswith("example 0 as trained (⟦trained⟧): <|im_start|>system\\n")
    assert "assistant\\n⟦Blue.<|im_end|>⟧\\n<|im_start|>user\\nAnd grass?" in logs[0]
    assert logs[-1] == (
        f"format check passed: 1 chat examples; trained tokens {report.trained_tokens} of "
        f"{len(example.input_ids)} ({report.trained_tokens / len(example.input_ids):.1%})"
    )
    assert report.trained_tokens == 6  # "Blue", ".", <|im_end|>, "Green", ".", <|im_end|>


def test_long_examples_are_shown_head_and_tail(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    long_chat = [{"role": "user", "content": "word " * 2000}, {"role": "assistant", "content": "Done."}]
    example, _ = tokenize_example(tiny_tokenizer, long_chat, 8192)
    shown = render_trained(tiny_tokenizer, example)
    assert len(shown) <= SHOWN_CHARS + 3 and " … " in shown and shown.endswith("⟦Done.<|im_end|>⟧\\n")


def test_a_turn_trained_without_its_end_marker_fails() -> None:
    tokenizer = load_tiny_tokenizer()
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = NO_END_TEMPLATE
    example, _ = tokenize_example(tokenizer, CHAT, 4096)
    error = failure(Dataset([example], ["chat"]), tokenizer)
    assert "ends with 'Blue.'" in error.message and "would not learn to stop" in error.message


def test_a_turn_cut_off_by_max_seq_len_is_not_a_missing_marker(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    example, _ = tokenize_example(tiny_tokenizer, CHAT, 4096)
    cut = len(example.input_ids) - 3  # inside "Green." <|im_end|>
    short, truncated = tokenize_example(tiny_tokenizer, CHAT, cut)
    assert truncated and short.labels[-1] != -100
    assert check_format(Dataset([short], ["chat"]), tiny_tokenizer, cut).trained_tokens > 0


def test_doubled_bos_fails(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    example, _ = tokenize_example(tiny_tokenizer, CHAT, 4096)
    bos = tiny_tokenizer.bos_token_id
    doubled = Example([bos, *example.input_ids], [-100, *example.labels])
    assert "doubled BOS" in failure(Dataset([doubled], ["chat"]), tiny_tokenizer).message


def test_a_fully_masked_example_fails_even_among_good_ones(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    good, _ = tokenize_example(tiny_tokenizer, CHAT, 4096)
    masked = Example(good.input_ids, [-100] * len(good.input_ids))
    assert (
        "example 1 is fully masked"
        in failure(Dataset([good, masked], ["chat", "chat"]), tiny_tokenizer).message
    )


def test_padding_with_eos_fails(raw_tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    # SmolLM2 ships with pad == eos == <|im_end|>; the runner must never train with it like that.
    example, _ = tokenize_example(raw_tiny_tokenizer, CHAT, 4096)
    error = failure(Dataset([example], ["chat"]), raw_tiny_tokenizer)
    assert "pad token '<|im_end|>'" in error.message and "never learn to stop" in error.message
