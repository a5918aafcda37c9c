"""Training JSONL in, token ids and loss masks out.

Two row kinds (docs/runner-protocol.md): chat rows `{"messages": [...]}` are fine-tuning examples, trained
only on assistant turns (and only those with weight 1, when weights are given); text rows `{"text": "..."}`
are documents for continued pre-training, joined and cut into max_seq_len chunks with every token trained.

The tokenizer's own chat template is the single source of truth for the rendered text: training sees
exactly what `tokenizer.apply_chat_template(messages, tokenize=False)` produces, as inference will.
Which tokens are trained is worked out from the template too, by rendering message prefixes: the assistant
turn at index i is the text between "messages[:i] plus a generation prompt" and "messages[:i+1]". That needs
the template to be prefix-stable (rendering more messages only appends); templates that are not fail loudly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jinja2 import TemplateError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from runner_image.chat_turns import end_of_turn_token
from runner_image.errors import RunnerError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
# Existing tokens that are safe to pad with, tried in order when the tokenizer pads with its EOS token.
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]", "<|endoftext|>")
_ADDED_PAD = "<|pad|>"

# {"role", "content"} plus an optional "weight" (0|1) on assistant turns, which never reaches the template.
Message = dict[str, Any]
ExampleKind = Literal["chat", "text"]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        # Position 0 is never a prediction target (nothing precedes it), so it does not count.
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


@dataclass(frozen=True)
class ChatRow:
    line: int
    messages: list[Message]


@dataclass(frozen=True)
class TextRow:
    line: int
    text: str


Row = ChatRow | TextRow


@dataclass
class Dataset:
    examples: list[Example]
    # kinds[i] says whether examples[i] is a chat example or a chunk of text documents (the format check
    # holds them to different rules).
    kinds: list[ExampleKind] = field(default_factory=list)
    read: int = 0
    documents: int = 0
    dropped_no_assistant: int = 0
    dropped_truncated: int = 0
    truncated: int = 0
    folded_system: int = 0
    notes: list[str] = field(default_factory=list)


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> bool:
    """Give the tokenizer a pad token distinct from EOS; return True if the embeddings had to grow.

    Padding with EOS is a classic bug: anything that masks by pad id also masks the real end-of-turn tokens,
    and the model never learns to stop. An existing spare token is preferred because growing the vocabulary
    changes the base model's shapes (the adapter then has to carry the embeddings).
    """
    eos_ids = end_of_turn_ids(tokenizer)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in eos_ids:
        _sync_model_pad(tokenizer, model)
        return False
    vocab = tokenizer.get_vocab()
    candidates = [tokenizer.unk_token] if tokenizer.unk_token else []
    candidates += list(_PAD_CANDIDATES)
    for token in candidates:
        token_id = vocab.get(token)
        if token_id is not None and token_id not in eos_ids and token_id != tokenizer.bos_token_id:
            tokenizer.pad_token = token
            _sync_model_pad(tokenizer, model)
            return False
    tokenizer.add_special_tokens({"pad_token": _ADDED_PAD})
    resized = False
    if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # The new row is drawn at random; a fixed seed keeps the base model identical across resumes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.resize_token_embeddings(len(tokenizer))
        resized = True
    _sync_model_pad(tokenizer, model)
    return resized


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """EOS, the well-known end-of-turn tokens in the vocabulary, and the special token the chat template
    itself writes right after an assistant reply (found by rendering a probe), so none is used for padding."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if token in vocab:
            ids.add(vocab[token])
    marker = end_of_turn_token(tokenizer)
    if marker is not None:
        ids.add(marker[0])
    return ids


def _sync_model_pad(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None) -> None:
    if model is None:
        return
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def read_rows(path: str | Path) -> list[Row]:
    """Parse and validate the file into chat and text rows. Any bad line is a RunnerError naming it."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise RunnerError("bad_data", f"cannot read {p}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise RunnerError("bad_data", f"{p} is not UTF-8 text: {e}") from e
    rows: list[Row] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p.name} line {number}"
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise RunnerError("bad_data", f"{where}: not valid JSON ({e.msg})", hint=_FORMAT_HINT) from e
        if isinstance(obj, dict) and "messages" not in obj and "text" in obj:
            rows.append(TextRow(number, _validate_text(obj["text"], where)))
        else:
            rows.append(ChatRow(number, _validate_messages(obj, where)))
    if not rows:
        raise RunnerError("bad_data", f"{p} has no examples", hint=_FORMAT_HINT)
    return rows


_FORMAT_HINT = (
    'each line must be {"messages": [{"role": "user", "content": "..."}, ...]} or, for plain-text '
    'pre-training, {"text": "..."}'
)


def _validate_text(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise RunnerError("bad_data", f'{where}: "text" must be a non-empty string', hint=_FORMAT_HINT)
    return text


def _validate_messages(obj: Any, where: str) -> list[Message]:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise RunnerError(
            "bad_data", f'{where}: expected an object with a "messages" list', hint=_FORMAT_HINT
        )
    messages: list[Message] = []
    for i, m in enumerate(obj["messages"]):
        if not isinstance(m, dict):
            raise RunnerError("bad_data", f"{where}: message {i} is not an object", hint=_FORMAT_HINT)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RunnerError(
                "bad_data", f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise RunnerError("bad_data", f"{where}: message {i} content must be a string")
        message: Message = {"role": role, "content": content}
        weight = m.get("weight")
        if weight is not None:
            if isinstance(weight, bool) or weight not in (0, 1):
                raise RunnerError(
                    "bad_data",
                    f"{where}: message {i} has weight {weight!r}",
                    hint="a weight is 0 (shown but not trained) or 1 (trained)",
                )
            if weight == 1 and role != "assistant":
                raise RunnerError(
                    "bad_data",
                    f"{where}: message {i} is a {role} turn with weight 1, but only assistant turns are "
                    "trained",
                    hint="remove the weight from that message",
                )
            if role == "assistant":
                message["weight"] = int(weight)
        messages.append(message)
    if not messages:
        raise RunnerError("bad_data", f"{where}: empty messages list", hint=_FORMAT_HINT)
    return messages


def is_trained(message: Message) -> bool:
    """An assistant turn without weight 0: the only kind of turn whose tokens carry loss."""
    return message["role"] == "assistant" and message.get("weight", 1) == 1


def _for_template(messages: list[Message]) -> list[dict[str, str]]:
    # Only what the template knows about: a template that loops over a message's keys must not see weights.
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], where: str = "example") -> str:
    try:
        text = tokenizer.apply_chat_template(_for_template(messages), tokenize=False)
    except TemplateError as e:
        # Templates enforce their own rules (alternating roles, no system role...); say which line broke one.
        raise RunnerError("bad_data", f"{where}: the model's chat template rejected it: {e}") from e
    assert isinstance(text, str)
    return text


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], text: str, where: str = "example"
) -> list[tuple[int, int]]:
    """Character spans of `text` that are trained assistant turns, each including its end-of-turn marker.

    A turn starts where "messages[:i] plus the generation prompt" ends; that rendering must be a prefix of the
    whole conversation. It ends where "messages[:i+1]" ends, which must be a prefix of the whole conversation
    too, give or take an EOS that some templates (Phi-3's) append only where rendering stops. Whitespace after
    the end-of-turn marker (ChatML's newline) is left out: the model stops at the marker, so it never has to
    produce what follows.
    """
    spans: list[tuple[int, int]] = []
    plain = _for_template(messages)
    for i, m in enumerate(messages):
        if not is_trained(m):
            continue
        try:
            before = tokenizer.apply_chat_template(plain[:i], tokenize=False, add_generation_prompt=True)
            through = tokenizer.apply_chat_template(plain[: i + 1], tokenize=False)
        except TemplateError as e:
            raise RunnerError("bad_data", f"{where}: the model's chat template rejected it: {e}") from e
        assert isinstance(before, str) and isinstance(through, str)
        start = len(before)
        end = _turn_end(through, text, tokenizer.eos_token)
        if not text.startswith(before) or end is None or end < start:
            raise RunnerError(
                "template_not_prefix",
                f"{where}: the chat template does not render message {i} as an extension of the messages "
                "before it, so the assistant tokens cannot be located",
                hint="use a model whose chat template only appends when messages are added "
                "(some templates move the system prompt into the last user turn; try without one)",
            )
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _turn_end(through: str, text: str, eos: str | None) -> int | None:
    """Where the turn rendered by `through` ends inside `text`, or None if `through` is not a prefix of it."""
    if text.startswith(through):
        return len(through)
    # Templates like Phi-3's close the conversation with an EOS only when rendering stops there.
    if eos and through.endswith(eos) and text.startswith(through[: -len(eos)]):
        return len(through) - len(eos)
    return None


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer puts a BOS in front of plain text (as llama.cpp will at inference)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


_SYSTEM_PROBE: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "One?"},
    {"role": "assistant", "content": "Yes."},
    {"role": "user", "content": "Two?"},
    {"role": "assistant", "content": "Also yes."},
]


def takes_system_prompt(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the template renders a system turn where training can find every assistant turn after it.

    Gemma's templates refuse a system role outright; Mistral's moves the system prompt to the last user turn,
    so a conversation is no longer a prefix of its own continuation. Both are fine without a system turn.
    """
    try:
        assistant_spans(tokenizer, _SYSTEM_PROBE, render(tokenizer, _SYSTEM_PROBE))
    except RunnerError:
        return False
    return True


def fold_system_prompt(messages: list[Message]) -> list[Message]:
    """The system prompt moved to the start of the first user turn, as these models' own docs advise."""
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    first_user = dict(messages[1])
    first_user["content"] = f"{messages[0]['content']}\n\n{first_user['content']}"
    return [first_user, *messages[2:]]


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    max_seq_len: int,
    where: str = "example",
    add_bos: bool | None = None,
) -> tuple[Example, bool]:
    """Token ids and labels for one conversation; also whether it was truncated.

    The template decides the text. BOS appears exactly once if this tokenizer uses one: templates that write
    it themselves (Llama 3) get no second one, templates that leave it to the tokenizer (TinyLlama's) get it
    prepended, matching what inference with the tokenizer's defaults will feed the model.
    """
    text = render(tokenizer, messages, where)
    spans = assistant_spans(tokenizer, messages, text, where)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = list(enc["offset_mapping"])
    labels = [IGNORE_INDEX] * len(ids)
    for j, (a, _b) in enumerate(offsets):
        if any(s <= a < e for s, e in spans):
            labels[j] = ids[j]
    bos = tokenizer.bos_token_id
    if add_bos is None:
        add_bos = adds_bos(tokenizer)
    if add_bos and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
        labels.insert(0, IGNORE_INDEX)
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise RunnerError(
            "bad_template", f"{where}: the rendered conversation starts with a doubled BOS token"
        )
    truncated = len(ids) > max_seq_len
    return Example(ids[:max_seq_len], labels[:max_seq_len]), truncated


def tokenize_documents(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_seq_len: int, add_bos: bool | None = None
) -> list[Example]:
    """Documents for continued pre-training: joined into one token stream, cut into max_seq_len chunks.

    Each document gets the BOS this tokenizer puts in front of plain text (none for Qwen or SmolLM2) and ends
    with the tokenizer's EOS, so the model learns where a document stops and generation halts there. Chunks
    ignore document boundaries, as in standard causal-LM pre-training: no padding and no truncation, every
    token is a target. A last chunk of a single token predicts nothing and is left out.
    """
    if add_bos is None:
        add_bos = adds_bos(tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(([bos] if add_bos and bos is not None else []) + list(ids))
        if eos is not None:
            stream.append(eos)
    chunks = [stream[i : i + max_seq_len] for i in range(0, len(stream), max_seq_len)]
    return [Example(chunk, list(chunk)) for chunk in chunks if len(chunk) >= 2]


def load_dataset(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, what: str = "train"
) -> Dataset:
    """Tokenize a training JSONL file; drops (and counts) chat examples with nothing left to train on."""
    rows = read_rows(path)
    ds = Dataset(examples=[], read=len(rows))
    name = Path(path).name
    if not tokenizer.chat_template and any(isinstance(row, ChatRow) for row in rows):
        raise RunnerError(
            "no_chat_template",
            f"{what} file {name} holds conversations, but this model's tokenizer has no chat template to "
            "render them with",
            hint="use an instruct/chat model, add a chat_template to its tokenizer_config.json, "
            "or train on plain text",
        )
    add_bos = adds_bos(tokenizer)
    fold = any(isinstance(r, ChatRow) and r.messages[0]["role"] == "system" for r in rows) and (
        not takes_system_prompt(tokenizer)
    )
    texts: list[str] = []
    for row in rows:
        if isinstance(row, TextRow):
            texts.append(row.text)
            continue
        messages = fold_system_prompt(row.messages) if fold else row.messages
        ds.folded_system += int(messages is not row.messages)
        example, truncated = tokenize_example(
            tokenizer, messages, max_seq_len, f"{name} line {row.line}", add_bos=add_bos
        )
        ds.truncated += int(truncated)
        if example.trained_tokens > 0:
            ds.examples.append(example)
            ds.kinds.append("chat")
        elif any(is_trained(m) for m in row.messages):
            ds.dropped_truncated += 1
        else:
            ds.dropped_no_assistant += 1
    if texts:
        chunks = tokenize_documents(tokenizer, texts, max_seq_len, add_bos)
        ds.examples.extend(chunks)
        ds.kinds.extend("text" for _ in chunks)
        ds.documents = len(texts)
    if ds.folded_system:
        ds.notes.append(
            f"{what}: this model's chat template has no place for a system prompt, so in {ds.folded_system} "
            "examples it starts the first user turn instead (prompt the model that way too)"
        )
    if ds.truncated:
        ds.notes.append(
            f"{what}: {ds.truncated} of {ds.read} examples were truncated to {max_seq_len} tokens"
        )
    if ds.dropped_no_assistant:
        ds.notes.append(
            f"{what}: dropped {ds.dropped_no_assistant} examples with no assistant turn to train "
            "(none, or all with weight 0)"
        )
    if ds.dropped_truncated:
        ds.notes.append(
            f"{what}: dropped {ds.dropped_truncated} examples whose assistant turns were cut off entirely "
            f"by max_seq_len={max_seq_len}"
        )
    if not ds.examples:
        raise RunnerError(
            "no_trainable_examples",
            f"{what} file {name}: none of its {ds.read} examples has an assistant token to train on "
            f"(no trained assistant turn: {ds.dropped_no_assistant}; cut off by max_seq_len: "
            f"{ds.dropped_truncated})",
            hint="every example needs an assistant message with weight 1 (or no weight) that fits within "
            "max_seq_len",
        )
    return ds


@dataclass(frozen=True)
class SequenceCap:
    length: int
    truncated: int  # examples cut to `length`
    dropped: int  # examples with no trained token left within `length`


def cap_lengths(ds: Dataset, percentile: float) -> SequenceCap:
    """Cut every example longer than the `percentile`-th percentile of the lengths (nearest rank) to it.

    forged's out-of-memory remedy after a smaller micro-batch and gradient checkpointing: the longest few
    examples set the peak memory of the step they land in. A cut example keeps its start; one whose trained
    tokens all lay past the cap has nothing left to learn from and is dropped.
    """
    lengths = sorted(len(e.input_ids) for e in ds.examples)
    cap = lengths[max(1, math.ceil(percentile / 100 * len(lengths))) - 1]
    examples: list[Example] = []
    kinds: list[ExampleKind] = []
    truncated = dropped = 0
    for example, kind in zip(ds.examples, ds.kinds, strict=True):
        if len(example.input_ids) > cap:
            example = Example(example.input_ids[:cap], example.labels[:cap])
            if example.trained_tokens == 0:
                dropped += 1
                continue
            truncated += 1
        examples.append(example)
        kinds.append(kind)
    ds.examples, ds.kinds = examples, kinds
    return SequenceCap(cap, truncated, dropped)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example in this micro-batch (not to max_seq_len: that wastes compute)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same order."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def micro_batches(order: list[int], micro_batch_size: int) -> list[list[int]]:
    return [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]


def steps_per_epoch(n_examples: int, micro_batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_examples / micro_batch_size) / grad_accum)
