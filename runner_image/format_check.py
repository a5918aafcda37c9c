"""The formatting pre-flight: prove on the tokenized data that training sees what it is meant to.

Formatting bugs do not crash a run; they quietly train a model that never stops talking (end-of-turn not
trained, or masked away because padding uses the same id), that learns the prompts (mask off), or that sees
two BOS tokens it will never see at inference. So after tokenizing and before the first step the runner
shows the first few examples with the trained tokens marked, reports the trained-token ratio, and fails the
job with `format_check_failed` if any of these rules is broken:

- the pad token is not EOS or any end-of-turn token;
- no example is fully masked (and so the dataset is not either);
- no example starts with a doubled BOS;
- every trained assistant turn ends with an end-of-turn token (unless max_seq_len cut it off).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from runner_image import events
from runner_image.data import IGNORE_INDEX, Dataset, Example, end_of_turn_ids
from runner_image.errors import RunnerError

CODE = "format_check_failed"
SHOWN_EXAMPLES = 3
# Enough to see the template's headers and the first trained turn; the middle of long examples is elided.
SHOWN_CHARS = 1500
TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


@dataclass(frozen=True)
class FormatReport:
    trained_tokens: int
    total_tokens: int
    chat_examples: int
    text_chunks: int
    rendered: list[str]

    @property
    def trained_ratio(self) -> float:
        return self.trained_tokens / self.total_tokens if self.total_tokens else 0.0

    def summary(self) -> str:
        parts = [f"{self.chat_examples} chat examples"] if self.chat_examples else []
        parts += [f"{self.text_chunks} text chunks (every token trained)"] if self.text_chunks else []
        return (
            f"format check passed: {', '.join(parts)}; trained tokens {self.trained_tokens} of "
            f"{self.total_tokens} ({self.trained_ratio:.1%})"
        )


def format_preflight(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> FormatReport:
    """Check the training set, log the rendered examples and the ratio; a broken rule is a RunnerError."""
    report = check_format(ds, tokenizer, max_seq_len)
    for i, text in enumerate(report.rendered):
        events.log(f"example {i} as trained ({TRAINED_OPEN}trained{TRAINED_CLOSE}): {text}")
    events.log(report.summary())
    return report


def check_format(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> FormatReport:
    eot = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None or pad in eot:
        shown = "no pad token" if pad is None else f"pad token {tokenizer.convert_ids_to_tokens(pad)!r}"
        raise RunnerError(
            CODE,
            f"the tokenizer has {shown}, which is its end-of-turn token: anything that masks padding would "
            "also mask the end of every answer, and the model would never learn to stop",
            hint="give the tokenizer a pad token of its own (set pad_token in tokenizer_config.json to an "
            "unused token such as <unk>)",
        )
    if not ds.examples:
        raise RunnerError(CODE, "the training set is empty", hint="give at least one example")
    kinds = ds.kinds or ["chat"] * len(ds.examples)
    bos = tokenizer.bos_token_id
    for i, (example, kind) in enumerate(zip(ds.examples, kinds, strict=True)):
        if example.trained_tokens == 0:
            raise RunnerError(
                CODE,
                f"example {i} is fully masked: none of its tokens is trained",
                hint="every example needs an assistant turn with weight 1 (or no weight) within max_seq_len",
            )
        if bos is not None and example.input_ids[:2] == [bos, bos]:
            raise RunnerError(
                CODE,
                f"example {i} starts with a doubled BOS token ({tokenizer.convert_ids_to_tokens(bos)!r})",
                hint="the chat template writes BOS and the tokenizer adds another; remove one of them",
            )
        if kind == "chat":
            _check_turn_ends(i, example, eot, max_seq_len, tokenizer)
    trained = sum(e.trained_tokens for e in ds.examples)
    total = sum(len(e.input_ids) for e in ds.examples)
    rendered = [render_trained(tokenizer, e) for e in ds.examples[:SHOWN_EXAMPLES]]
    return FormatReport(trained, total, kinds.count("chat"), kinds.count("text"), rendered)


def _check_turn_ends(
    index: int, example: Example, eot: set[int], max_seq_len: int, tokenizer: PreTrainedTokenizerBase
) -> None:
    for start, end in trained_runs(example.labels):
        cut_off = end == len(example.input_ids) == max_seq_len
        if example.input_ids[end - 1] not in eot and not cut_off:
            ending = tokenizer.decode(example.input_ids[max(start, end - 5) : end])
            raise RunnerError(
                CODE,
                f"example {index}: a trained assistant turn ends with {ending!r}, not an end-of-turn token, "
                "so the model would not learn to stop",
                hint="use a chat template that closes each assistant turn with an end-of-turn token "
                f"({', '.join(tokenizer.convert_ids_to_tokens(sorted(eot)))})",
            )


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of trained positions."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for j, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = j
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, j))
            start = None
    return runs


def render_trained(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    """The example as text with trained runs wrapped in markers, on one line (newlines shown as \\n)."""
    pieces: list[str] = []
    position = 0
    for start, end in trained_runs(example.labels):
        pieces.append(tokenizer.decode(example.input_ids[position:start]))
        pieces.append(TRAINED_OPEN + tokenizer.decode(example.input_ids[start:end]) + TRAINED_CLOSE)
        position = end
    pieces.append(tokenizer.decode(example.input_ids[position:]))
    text = "".join(pieces).replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > SHOWN_CHARS:
        head = SHOWN_CHARS // 3
        text = f"{text[:head]} … {text[head - SHOWN_CHARS :]}"
    return text
