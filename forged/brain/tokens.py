"""Token lengths of a data file, counted with the planned model's own tokenizer when it is on this machine.

The `tokenizers` library (Rust, no torch) loads a tokenizer.json from: the tiny-* assets that ship with the
runner (read as data files; forged never imports runner_image code), a local model directory, or the
Hugging Face cache. Catalog models use their family's asset, since every size of a family shares one
tokenizer. With none of those, lengths are estimated from characters and the result says so.
"""

from __future__ import annotations

import importlib.util
import lzma
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from forge.catalog import find_model, load_catalog, tiny_family

from forged.brain.sampling import seeded_sample

CHARS_PER_TOKEN = 4  # the planner's estimate for English text; what is used with no tokenizer at hand
# Tokenizing every row of a million-row file would take minutes; percentiles of a seeded sample do not
# move, and the longest rows by characters are added so the maximum is not missed.
SAMPLE_ROWS = 2000
LONGEST_ROWS = 50
HISTOGRAM_BINS = 40
# A chars-per-token ratio settles within a few hundred texts.
RATIO_ROWS = 500
RATIO_CHARS = 2000


@dataclass(frozen=True)
class TokenizerSource:
    label: str  # what the report names: "SmolLM2-135M-Instruct's tokenizer"
    path: Path  # tokenizer.json or tokenizer.json.xz


@dataclass(frozen=True)
class Lengths:
    p50: int
    p95: int
    p99: int
    max: int
    measured: int
    tokenizer: str
    estimate: bool
    note: str
    histogram: list[int]
    bin_width: int


def _assets_root() -> Path | None:
    # find_spec locates the package without running its code.
    spec = importlib.util.find_spec("runner_image")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def _asset_tokenizer(family: str) -> TokenizerSource | None:
    fam = load_catalog().families.get(family)
    root = _assets_root()
    # A stand-in tokenizer (Gemma's) would count pieces of a vocabulary the real model does not have.
    if fam is None or fam.tiny is None or fam.tiny.tokenizer != "real" or root is None:
        return None
    folder = root / ("tiny" if family == "smollm" else family)
    for name in ("tokenizer.json", "tokenizer.json.xz"):
        if (folder / name).is_file():
            return TokenizerSource(f"{fam.tiny.source.rsplit('/', 1)[-1]}'s tokenizer", folder / name)
    return None


def find_tokenizer(model: str) -> TokenizerSource | None:
    """The tokenizer for `model` (tiny[-family], a catalog name, a local directory, a cached HF repo id)."""
    model = model.strip()
    if not model:
        return None
    family = tiny_family(model)
    if family is not None:
        return _asset_tokenizer(family)
    directory = Path(model).expanduser()
    if directory.is_dir():
        found = directory / "tokenizer.json"
        return TokenizerSource(f"{directory.name}'s tokenizer", found) if found.is_file() else None
    known = find_model(model)
    if known is not None:
        return _asset_tokenizer(known.family)
    return _cached_hub_tokenizer(model)


def _cached_hub_tokenizer(repo: str) -> TokenizerSource | None:
    if repo.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache  # light, and only for repo ids

    found = try_to_load_from_cache(repo, "tokenizer.json")
    return TokenizerSource(f"{repo}'s tokenizer", Path(found)) if isinstance(found, str) else None


@lru_cache(maxsize=4)
def _load(path: Path) -> Any:
    from tokenizers import Tokenizer

    if path.suffix == ".xz":
        return Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode("utf-8"))
    return Tokenizer.from_file(str(path))


def measure(texts: Sequence[str], model: str, seed: int = 0) -> Lengths:
    """Token-length percentiles of `texts` with `model`'s tokenizer, or a characters/4 estimate."""
    chosen = _sample(texts, seed)
    source = find_tokenizer(model)
    tokenizer = _load(source.path) if source is not None else None
    if tokenizer is not None and source is not None:
        encodings = tokenizer.encode_batch(chosen, add_special_tokens=False)
        counts = sorted(len(e.ids) for e in encodings)
        label, estimate = source.label, False
        how = f"counted with {source.label} over the text of each example (without chat-template tokens)"
    else:
        counts = sorted(math.ceil(len(t) / CHARS_PER_TOKEN) for t in chosen)
        label, estimate = "estimate", True
        how = (
            f"an estimate (characters / {CHARS_PER_TOKEN}): no tokenizer for "
            f"{model or 'the planned model'!r} on this machine"
        )
    if len(chosen) < len(texts):
        how += f"; a seeded sample of {len(chosen):,} of {len(texts):,} examples, with the longest ones"
    if not counts:
        return Lengths(0, 0, 0, 0, 0, label, estimate, how, [], 1)
    histogram, width = _histogram(counts)
    return Lengths(
        p50=percentile(counts, 0.50),
        p95=percentile(counts, 0.95),
        p99=percentile(counts, 0.99),
        max=counts[-1],
        measured=len(counts),
        tokenizer=label,
        estimate=estimate,
        note=how,
        histogram=histogram,
        bin_width=width,
    )


def percentile(sorted_values: Sequence[int], q: float) -> int:
    # Nearest-rank, like ingest's: always an observed length.
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _sample(texts: Sequence[str], seed: int) -> list[str]:
    return [texts[i] for i in sample_indices([len(t) for t in texts], seed)]


def sample_indices(char_lengths: Sequence[int], seed: int = 0) -> list[int]:
    """Which of the examples (given their lengths in characters) `measure` counts: a seeded sample plus
    the longest, in order; all of them when there are few. For callers that hold the texts elsewhere."""
    return seeded_sample(len(char_lengths), SAMPLE_ROWS, seed, char_lengths, LONGEST_ROWS)


def chars_per_token(texts: Sequence[str], model: str, seed: int = 0) -> float | None:
    """Characters per token of `texts` with `model`'s tokenizer over a bounded seeded sample, or None when
    that tokenizer is not on this machine (callers fall back to CHARS_PER_TOKEN)."""
    source = find_tokenizer(model)
    texts = [t for t in texts if t.strip()]
    if source is None or not texts:
        return None
    if len(texts) > RATIO_ROWS:
        texts = random.Random(seed).sample(texts, RATIO_ROWS)
    # The start of each text is enough for a ratio; a 1 MB document would only cost time.
    chosen = [t[:RATIO_CHARS] for t in texts]
    counted = sum(len(e.ids) for e in _load(source.path).encode_batch(chosen, add_special_tokens=False))
    return sum(map(len, chosen)) / counted if counted else None


def _histogram(sorted_counts: Sequence[int]) -> tuple[list[int], int]:
    """Counts per bin, bins of equal width from 0 up to the 99th percentile; longer ones go in the last
    bin, so one 26 KB outlier does not squash everything else into the first bar."""
    top = max(1, percentile(sorted_counts, 0.99))
    width = max(1, math.ceil((top + 1) / HISTOGRAM_BINS))
    bins = [0] * min(HISTOGRAM_BINS, top // width + 1)
    for count in sorted_counts:
        bins[min(len(bins) - 1, count // width)] += 1
    return bins, width
