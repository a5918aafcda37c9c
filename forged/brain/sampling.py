"""Which rows a bounded look at a dataset reads: one seeded sampler for study and the token counts, so the
same file and seed always show the same rows."""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence


def seeded_sample(n: int, k: int, seed: int, lengths: Sequence[int] = (), longest: int = 0) -> list[int]:
    """Sorted row indices: all `n` rows when there are at most `k + longest`, else `k` drawn with `seed`
    plus the `longest` rows by `lengths` (the ones that decide a sequence cap and a worst-case step)."""
    if n <= k + longest:
        return list(range(n))
    picked = set(random.Random(seed).sample(range(n), k))
    if longest:
        picked.update(heapq.nlargest(longest, range(n), key=lengths.__getitem__))
    return sorted(picked)
