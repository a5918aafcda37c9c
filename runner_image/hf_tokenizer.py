"""Load a model directory's tokenizer as its tokenizer.json says, which is how the model was trained.

transformers 5 no longer runs a LlamaTokenizer-class tokenizer.json as written: it keeps the vocabulary and
merges and builds its own pipeline, and with `"legacy": false` in tokenizer_config.json (TinyLlama, Phi-3)
that pipeline puts SentencePiece's dummy prefix "▁" only at the very start of the input. The files those
models ship instead have the legacy Prepend("▁") normalizer: a prefix at the start of every stretch of text
between special tokens, which is what SentencePiece itself does when a chat is encoded segment by segment,
what transformers 4 (which ran tokenizer.json verbatim) trained these models on, and what llama.cpp's
`add_space_prefix` reproduces. Rebuilt, a TinyLlama chat loses the "▁" after every `</s>` and a text that
starts with a space loses one "▁", so the runner would train on ids the model never saw and that no GGUF can
reproduce. Such files are therefore loaded verbatim (TokenizersBackend), and a tokenizer saved from them
records that class, so the adapter, the merged model, the GGUF converter and the parity gate all tokenize the
same way. Every other tokenizer loads through AutoTokenizer as before.

No transformers import at module level: forged's export worker imports this without paying for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DUMMY_PREFIX = "\u2581"


def has_legacy_dummy_prefix(model_dir: str | Path) -> bool:
    """Whether the directory's tokenizer.json prepends SentencePiece's dummy prefix with a normalizer."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return False
    normalizer = json.loads(path.read_text(encoding="utf-8")).get("normalizer") or {}
    steps = normalizer.get("normalizers") or [normalizer]
    return any(step.get("type") == "Prepend" and step.get("prepend") == DUMMY_PREFIX for step in steps)


def load_pretrained_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The directory's tokenizer, with a legacy SentencePiece tokenizer.json run as written (see above)."""
    from transformers import AutoTokenizer, TokenizersBackend

    loader = TokenizersBackend if has_legacy_dummy_prefix(model_dir) else AutoTokenizer
    return loader.from_pretrained(str(model_dir), local_files_only=True)
