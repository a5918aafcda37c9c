"""The real tokenizers (and chat templates) of the `tiny-<family>` pipeline-check models, shipped in assets/.

Big tokenizer.json files ship xz-compressed to keep the package small. They are unpacked once into the user's
cache (XDG_CACHE_HOME/forge/tokenizers/<family>-<digest>, digest of the compressed file, so an upgraded asset
never meets a stale copy) by writing a temporary directory and renaming it into place, so concurrent runners
never see a half-written tokenizer. Then transformers loads the directory as it would any local model.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from runner_image.hf_tokenizer import load_pretrained_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ASSETS_ROOT = Path(__file__).parent / "assets"
FAMILIES: tuple[str, ...] = ("smollm", "tinyllama", "llama", "qwen", "phi", "gemma", "gemma2", "mistral")
# smollm's files are the ones the original `tiny` model has always used; Gemma 2 shares Gemma's stand-in
# tokenizer and (byte-identical) chat template.
_ASSET_DIRS = {family: family for family in FAMILIES} | {"smollm": "tiny", "gemma2": "gemma"}
_COMPRESSED = "tokenizer.json.xz"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


class UnknownFamilyError(ValueError):
    """A tiny family name that does not exist; the message lists the ones that do."""


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise UnknownFamilyError(
            f"unknown tiny model family {family!r}: use one of {', '.join(FAMILIES)} (e.g. tiny-qwen)"
        )
    return family


def asset_dir(family: str) -> Path:
    """The family's shipped files: tokenizer (maybe compressed), chat template, real model config, NOTICE."""
    return ASSETS_ROOT / _ASSET_DIRS[check_family(family)]


def tokenizer_dir(family: str) -> Path:
    """A directory AutoTokenizer can load: the asset directory itself, or its unpacked copy in the cache."""
    source = asset_dir(family)
    packed = source / _COMPRESSED
    if not packed.is_file():
        return source
    data = packed.read_bytes()
    name = f"{family}-{hashlib.sha256(data).hexdigest()[:16]}"
    last_error: OSError | None = None
    for root in _cache_roots():
        target = root / name
        if (target / "tokenizer.json").is_file():
            return target
        try:
            return _unpack(source, data, target)
        except OSError as e:  # a read-only or full cache: try the next place
            last_error = e
    raise OSError(f"cannot unpack the {family} tokenizer into a cache directory: {last_error}")


def load_tokenizer(family: str) -> PreTrainedTokenizerBase:
    """The family's real tokenizer with its real chat template, exactly as shipped (pad token untouched)."""
    return load_pretrained_tokenizer(tokenizer_dir(family))


def _cache_roots() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    fallback = Path(tempfile.gettempdir()) / f"forge-{os.getuid()}-tokenizers"
    return [Path(base) / "forge" / "tokenizers", fallback]


def _unpack(source: Path, packed: bytes, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "tokenizer.json").write_bytes(lzma.decompress(packed))
        for name in _TOKENIZER_FILES[1:]:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        try:
            staging.rename(target)
        except OSError:
            # Another process unpacked the same digest first; its copy is identical.
            if not (target / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
