"""Padding-free batches: the same loss and gradients as padding, and no attention across examples."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerBase

from runner_image import attention
from runner_image.batching import batch_tokens, pack
from runner_image.data import IGNORE_INDEX, Example, collate, tokenize_example
from runner_image.tiny import build_tiny_model
from runner_image.train import forward_loss

CPU = torch.device("cpu")


def _conv(k: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "word " * k},
        {"role": "assistant", "content": "reply number " * (2 * k + 1)},
    ]


@pytest.fixture(scope="module")
def examples(tiny_tokenizer: PreTrainedTokenizerBase) -> list[Example]:
    return [tokenize_example(tiny_tokenizer, _conv(k), 512)[0] for k in (1, 9, 3, 14)]


@pytest.fixture(scope="module")
def lora_model(tiny_tokenizer: PreTrainedTokenizerBase) -> PeftModel:
    # A non-zero LoRA B (init_lora_weights=False) so the adapter path shapes the output and gets gradients.
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(0)
    model = get_peft_model(build_tiny_model(tiny_tokenizer), config)
    assert attention.choose(model.base_model.model, CPU) == "sdpa"  # what a CPU trains with
    return model


def _loss_and_grads(model: PeftModel, batch: dict[str, torch.Tensor]) -> tuple[float, int, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss, n = forward_loss(model, batch, CPU, None)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), n, grads


def test_pack_lays_examples_end_to_end_with_restarting_positions(examples: list[Example]) -> None:
    batch = pack(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["input_ids"][0].tolist() == [t for e in examples for t in e.input_ids]
    assert batch["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]
    assert batch["cu_seq_lens"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert int(batch["max_length"]) == max(lengths)
    assert batch_tokens(batch) == sum(lengths)


def test_no_example_is_trained_to_predict_the_next_examples_first_token(tiny_tokenizer) -> None:
    # Plain-text chunks train every token, so without the boundary mask the last token of one chunk would be
    # trained to predict the first token of the next, unrelated one.
    a = Example(input_ids=[5, 6, 7], labels=[5, 6, 7])
    b = Example(input_ids=[8, 9], labels=[8, 9])
    labels = pack([a, b])["labels"][0].tolist()
    assert labels == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]
    # ... which trains exactly the tokens the padded batch trains.
    padded = collate([a, b], pad_id=0)["labels"]
    assert int((padded[:, 1:] != IGNORE_INDEX).sum()) == sum(x != IGNORE_INDEX for x in labels[1:])


def test_packed_batch_gives_the_padded_loss_and_gradients(
    lora_model: PeftModel, examples: list[Example], tiny_tokenizer
) -> None:
    padded_loss, padded_n, padded_grads = _loss_and_grads(
        lora_model, collate(examples, tiny_tokenizer.pad_token_id)
    )
    packed_loss, packed_n, packed_grads = _loss_and_grads(lora_model, pack(examples))
    assert packed_n == padded_n > 0
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    # Summation order differs between the two layouts, so compare as vectors, not element by element.
    assert float((packed_grads - padded_grads).norm() / padded_grads.norm()) < 1e-5


def test_no_token_attends_to_another_example(lora_model: PeftModel, examples: list[Example]) -> None:
    first, second = examples[0], examples[1]
    untrained = [IGNORE_INDEX] * len(first.input_ids)
    before = Example(first.input_ids, untrained)
    scrambled = Example([(t * 7 + 3) % 1000 for t in first.input_ids], untrained)
    alone, _ = forward_loss(lora_model, pack([second]), CPU, None)
    after_first, _ = forward_loss(lora_model, pack([before, second]), CPU, None)
    after_scrambled, _ = forward_loss(lora_model, pack([scrambled, second]), CPU, None)
    # The second example's loss is the same alone, after the first, and after garbage: it sees only itself.
    assert after_first.item() == pytest.approx(alone.item(), rel=1e-5)
    assert after_scrambled.item() == pytest.approx(alone.item(), rel=1e-5)
