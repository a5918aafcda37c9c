"""Turn the user's --model into something the runner can load without a network.

forged resolves (and, when online, downloads) models before a job starts, so the runner itself never
needs the network; inside a container it has none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TINY = "tiny"


class ModelError(ValueError):
    """A model reference that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "tiny" or "path"
    path: str = ""

    def to_runner(self) -> dict[str, str]:
        return {"kind": self.kind} if self.kind == TINY else {"kind": "path", "path": self.path}


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def check_local(name: str) -> ModelRef | None:
    """Resolve without any network: tiny, a local directory, or an HF repo id already in the cache."""
    name = name.strip()
    if not name:
        raise ModelError("no model given: pass --model tiny, a local model directory, or an HF repo id")
    if name == TINY:
        return ModelRef(TINY)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{name} is not a Hugging Face model directory (no config.json in it)")
        return ModelRef("path", str(path.resolve()))
    if _looks_like_path(name):
        raise ModelError(f"no model directory at {name}: check the path, or pass an HF repo id like org/name")
    if name.count("/") != 1:
        raise ModelError(
            f"unknown model {name!r}: pass --model tiny, a local model directory, or an HF repo id (org/name)"
        )
    from huggingface_hub import snapshot_download  # imported lazily: it is heavy and rarely needed

    try:
        return ModelRef("path", snapshot_download(name, local_files_only=True))
    except Exception:
        return None


def download(name: str, progress: Callable[[str], None]) -> ModelRef:
    """Fetch an HF repo into the local cache, or explain how to get it there when the hub is unreachable."""
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
