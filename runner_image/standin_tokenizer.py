"""The stand-in Gemma tokenizer: Gemma's real tokenizer files are not available here, so forge trains its own.

It copies what the pipeline can observe of Gemma's tokenizer: a byte-fallback BPE over "▁"-joined text with
no dummy prefix (transformers' GemmaTokenizer pipeline), `<bos>` added in front of every encoding, the special
tokens at Gemma's ids (`<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, `<mask>` 4, `<start_of_turn>` 106,
`<end_of_turn>` 107), with Gemma's real chat template. Its pieces are learned from a few KB of text shipped
beside it (assets/gemma/standin_corpus.txt), so it has a few thousand pieces instead of Gemma's 256,000 and
splits words differently; the tiny Gemma models keep the real 256,000-row embedding regardless.

The files in assets/gemma are the output of `python -m runner_image.standin_tokenizer`; a test checks that
training again reproduces them, so they never drift from this code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import GemmaTokenizer

GEMMA_ASSETS = Path(__file__).parent / "assets" / "gemma"
CORPUS = GEMMA_ASSETS / "standin_corpus.txt"
CHAT_TEMPLATE = GEMMA_ASSETS / "chat_template.jinja"
TARGET_PIECES = 4000

# Gemma's ids for its special tokens; the gaps are filled with Gemma-style placeholders so the ids line up.
_SPECIAL_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "<start_of_turn>": 106}
_SPECIAL_IDS["<end_of_turn>"] = 107
_TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]


def _head_vocab() -> dict[str, int]:
    vocab = dict(_SPECIAL_IDS)
    vocab["[@BOS@]"] = 5
    for i, token_id in enumerate(range(6, 106)):
        vocab[f"<unused{i}>"] = token_id
    # Byte pieces make byte fallback possible: text the BPE cannot cover becomes <0xNN> tokens, never <unk>.
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = 108 + byte
    return dict(sorted(vocab.items(), key=lambda kv: kv[1]))


def _learn_pieces(corpus: str) -> tuple[list[str], list[tuple[str, str]]]:
    """BPE pieces and merges learned from the corpus, split at spaces the way SentencePiece splits words."""
    learner = Tokenizer(BPE())
    learner.normalizer = normalizers.Replace(" ", "▁")
    learner.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = BpeTrainer(vocab_size=TARGET_PIECES, show_progress=False, special_tokens=[])
    learner.train_from_iterator(corpus.splitlines(), trainer)
    model = json.loads(learner.to_str())["model"]
    pieces = [piece for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return pieces, merges  # type: ignore[return-value]


def train_gemma_standin() -> GemmaTokenizer:
    pieces, merges = _learn_pieces(CORPUS.read_text(encoding="utf-8"))
    vocab = _head_vocab()
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens=_TURN_TOKENS,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
    return tokenizer


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else GEMMA_ASSETS
    train_gemma_standin().save_pretrained(str(out))
    print(f"wrote the stand-in Gemma tokenizer to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
