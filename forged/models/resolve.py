"""Turn the user's --model into something the runner can load without a network.

forged resolves (and, when online, downloads) models before a job starts, so the runner itself never
needs the network; inside a container it has none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forge.catalog import find_model, load_catalog, tiny_family

TINY = "tiny"


class ModelError(ValueError):
    """A model reference that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "tiny" or "path"
    path: str = ""
    family: str = "smollm"  # which tiny-<family>; smollm is the original `tiny`

    def to_runner(self) -> dict[str, str]:
        if self.kind != TINY:
            return {"kind": "path", "path": self.path}
        # Plain `tiny` keeps the spec it always had, so an older runner still accepts it.
        return {"kind": TINY} if self.family == "smollm" else {"kind": TINY, "family": self.family}


def hub_repo(name: str) -> str:
    """The HF repo id a catalog name (`qwen`, `qwen2.5-3b`) stands for; any other name unchanged."""
    model = find_model(name)
    return model.repo if model is not None else name.strip()


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def check_local(name: str) -> ModelRef | None:
    """Resolve without any network: tiny[-<family>], a local directory, a catalog name (`qwen`) or an HF repo
    id already in the cache."""
    name = name.strip()
    if not name:
        raise ModelError("no model given: pass --model tiny, a local model directory, or an HF repo id")
    family = tiny_family(name)
    if family is not None:
        return ModelRef(TINY, family=family)
    if name.lower().startswith(TINY + "-"):
        families = ", ".join(f"tiny-{f}" for f in load_catalog().families)
        raise ModelError(f"unknown pipeline-check model {name!r}: use tiny or one of {families}")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{name} is not a Hugging Face model directory (no config.json in it)")
        return ModelRef("path", str(path.resolve()))
    if _looks_like_path(name):
        raise ModelError(f"no model directory at {name}: check the path, or pass an HF repo id like org/name")
    name = hub_repo(name)
    if name.count("/") != 1:
        shorts = ", ".join(m.short_name for m in load_catalog().models if m.short_name)
        raise ModelError(
            f"unknown model {name!r}: pass --model tiny, one of {shorts}, a local model directory, "
            "or an HF repo id (org/name)"
        )
    from huggingface_hub import snapshot_download  # imported lazily: it is heavy and rarely needed

    try:
        return ModelRef("path", snapshot_download(name, local_files_only=True))
    except Exception:
        return None


def download(name: str, progress: Callable[[str], None]) -> ModelRef:
    """Fetch an HF repo (or the one a catalog name stands for) into the local cache, or explain how to get it
    there when the hub is unreachable."""
    name = hub_repo(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline_hint = (
        f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached from here: "
        f"run `huggingface-cli download {name}` on a machine with network and copy the cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}), or pass a local directory with --model PATH"
    )
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise ModelError(offline_hint)
    progress(f"downloading {name} from the Hugging Face hub")
    try:
        path = snapshot_download(
            name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
        )
    except RepositoryNotFoundError as e:
        raise ModelError(f"model {name!r} does not exist on the Hugging Face hub (or needs HF_TOKEN)") from e
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ModelError(offline_hint) from e
    progress(f"downloaded {name} to {path}")
    return ModelRef("path", path)


def resolve(name: str, progress: Callable[[str], None]) -> ModelRef:
    return check_local(name) or download(name, progress)
