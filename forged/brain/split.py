"""A seeded train/validation split that keeps near-duplicates on one side.

Rows whose user side normalizes to the same text (case, spacing, punctuation aside) form one group, and
whole groups go to validation. Otherwise a paraphrase-level copy of a training prompt sits in validation and
the validation loss rewards memorising instead of measuring generalisation.
"""

from __future__ import annotations

import contextlib
import os
import random
import string
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Punctuation to spaces, then split/join: several times faster than a regex over a million rows.
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))
# The same for ASCII text as bytes, which translate faster still. str.split() also splits at the
# separators \x1c-\x1f, so they become spaces too and both ways give the same key.
_ASCII_PUNCTUATION = bytes.maketrans(
    string.punctuation.encode() + b"\x1c\x1d\x1e\x1f", b" " * (len(string.punctuation) + 4)
)
# Long enough to tell real prompts apart, short enough that a million keys stay cheap.
_KEY_CHARS = 400


def near_duplicate_key(record: dict[str, Any]) -> int:
    """Rows with the same key are near-duplicates: their user turns (or text) match once normalized."""
    messages = record.get("messages")
    if isinstance(messages, list):
        text = "\n".join(m["content"] for m in messages if m.get("role") == "user")
    else:
        text = str(record.get("text", ""))
    return text_key(text)


def text_key(text: str) -> int:
    """`near_duplicate_key` of a record whose user turns (or text) are `text`."""
    text = text[: _KEY_CHARS * 2].casefold()
    if text.isascii():
        return hash(b" ".join(text.encode().translate(_ASCII_PUNCTUATION).split())[:_KEY_CHARS].decode())
    return hash(" ".join(text.translate(_PUNCTUATION).split())[:_KEY_CHARS])


def choose_val(keys: Sequence[int], n_val: int, seed: int) -> bytearray:
    """Flags (1 = validation) for each row: whole groups of equal keys, about n_val rows, chosen by `seed`.

    A group that would overshoot n_val is skipped for a smaller one, so the count is met exactly whenever
    single rows remain; the choice depends only on the seed and the order groups first appear.
    """
    sizes = Counter(keys)  # groups in the order they first appear
    order = list(sizes)
    random.Random(seed).shuffle(order)
    chosen: set[int] = set()
    total = 0
    for key in order:
        if total >= n_val:
            break
        if total + sizes[key] <= n_val:
            chosen.add(key)
            total += sizes[key]
    return bytearray(map(chosen.__contains__, keys))


def write_split(lines: Iterable[bytes], is_val: bytearray, train_path: Path, val_path: Path) -> None:
    """Write each record (UTF-8 JSON, no line break) to the file its flag says, streaming; both files get
    temp names first and are renamed at the end, so readers never see half a split."""
    finals = (train_path, val_path)
    tmp_paths: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            handles = []
            for final in finals:
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
                tmp_paths.append(Path(tmp))
                handles.append(stack.enter_context(os.fdopen(fd, "wb", buffering=1 << 20)))
            train_f, val_f = handles
            for line, val in zip(lines, is_val, strict=True):
                out = val_f if val else train_f
                out.write(line)
                out.write(b"\n")
            for f in handles:
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in zip(tmp_paths, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)
