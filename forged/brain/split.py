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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

# Punctuation to spaces, then split/join: several times faster than a regex over a million rows.
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))
# The same for ASCII text as bytes, which translate faster still. str.split() also splits at the
# separators \x1c-\x1f, so they become spaces too and both ways give the same key.
_ASCII_PUNCTUATION = bytes.maketrans(
    string.punctuation.encode() + b"\x1c\x1d\x1e\x1f", b" " * (len(string.punctuation) + 4)
)
# Long enough to tell real prompts apart, short enough that a million keys stay cheap.
_KEY_CHARS = 400
_BUFFER = 1 << 20


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


def choose_val(
    keys: Sequence[int], n_val: int, seed: int, sizes: Mapping[int, int] | None = None
) -> bytearray:
    """Flags (1 = validation) for each row: whole groups of equal keys, about n_val rows, chosen by `seed`.

    Groups are taken in a seeded random order; a group that would overshoot n_val is skipped for a smaller
    one, so the count is met exactly whenever single rows remain. The choice depends only on the seed and the
    order groups first appear. `sizes` is Counter(keys) when the caller counted it already.
    """
    sizes = Counter(keys) if sizes is None else sizes  # groups in the order they first appear
    chosen: set[int] = set()
    total = 0
    if n_val > 0:
        order = list(sizes)
        for key in _shuffled(order, random.Random(seed)):
            if total + sizes[key] <= n_val:
                chosen.add(key)
                total += sizes[key]
                if total >= n_val:
                    break
    return bytearray(map(chosen.__contains__, keys)) if chosen else bytearray(len(keys))


def _shuffled(items: list[int], rng: random.Random) -> Iterator[int]:
    """`items` in a random order, drawn one at a time (Fisher-Yates, swapping in place): validation
    usually needs a tenth of a million groups, and shuffling all of them first cost more than the rest of
    the choice."""
    n = len(items)
    for i in range(n):
        j = rng.randrange(i, n)
        items[i], items[j] = items[j], items[i]
        yield items[i]


def write_split(
    source: Path, ends: Sequence[int], is_val: bytearray, train_path: Path, val_path: Path
) -> None:
    """Write the lines of `source` (the i-th ends at byte ends[i], past its line break) to the file each
    one's flag says. Runs of lines with one flag are copied as one slice, found with bytearray.find, so a
    million rows cost a few tens of thousands of reads and writes instead of a million of each. Both files
    get temp names first and are renamed at the end, so readers never see half a split."""
    finals = (train_path, val_path)
    tmp_paths: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            handles = []
            for final in finals:
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
                tmp_paths.append(Path(tmp))
                handles.append(stack.enter_context(os.fdopen(fd, "wb", buffering=_BUFFER)))
            train_f, val_f = handles
            # Read in order, run by run: train, val, train, ... each continuing where the last ended.
            src = stack.enter_context(source.open("rb", buffering=_BUFFER))
            n, done, row = len(is_val), 0, is_val.find(1)
            while row != -1:
                after = is_val.find(0, row)
                after = n if after == -1 else after
                begin, end = ends[row - 1] if row else 0, ends[after - 1]
                _copy(src, train_f, begin - done)
                _copy(src, val_f, end - begin)
                done = end
                row = is_val.find(1, after)
            _copy(src, train_f, (ends[-1] if ends else 0) - done)
            for f in handles:
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in zip(tmp_paths, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)


def _copy(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    """Copy the next `size` bytes of `src` to `dst`, a buffer's worth at a time."""
    while size > 0:
        chunk = src.read(min(size, _BUFFER))
        if not chunk:
            raise OSError(f"the validated records ended {size} bytes early: the copy was cut short")
        dst.write(chunk)
        size -= len(chunk)


def read_lines(source: Path, ends: Sequence[int], rows: Sequence[int]) -> list[bytes]:
    """Lines `rows` (ascending) of `source`, without their line breaks, by the offsets in `ends`."""
    picked: list[bytes] = []
    with source.open("rb") as f:
        for i in rows:
            begin = ends[i - 1] if i else 0
            f.seek(begin)
            picked.append(f.read(ends[i] - begin - 1))
    return picked
