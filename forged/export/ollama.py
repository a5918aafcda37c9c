"""Register a GGUF with Ollama through its HTTP API, with the official `ollama` client.

The flow is Ollama's own for a local file: push the file as a blob (`HEAD`, then `POST /api/blobs/sha256:…`
only if the server lacks it), create the model from a `files` mapping plus the chat template, the stop
parameters and a system prompt (`POST /api/create`), then confirm with `GET /api/tags`. Nothing here needs the
`ollama` binary, so it works the same against a remote Ollama. A server that cannot be reached is not an error
of the export: the caller reports it with the command that registers later (`register_later_command`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

DEFAULT_HOST = "http://127.0.0.1:11434"
# Ollama's model names: [namespace/]name[:tag], letters, digits and ._- (it matches names case-insensitively).
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_NAME = re.compile(rf"^(?:{_PART}/)?{_PART}(?::[A-Za-z0-9._-]{{1,80}})?$")
_CHUNK = 1 << 20
# The file beside a GGUF that says how Ollama should chat with it (written by the export, read to register).
PARAMS_SUFFIX = ".ollama.json"


class OllamaUnavailable(RuntimeError):
    """Nothing answers at the Ollama address: the export stands, registration waits for later."""


class OllamaRefused(RuntimeError):
    """Ollama answered and said no (bad blob, bad create request): a real failure to register."""


class ChatParams(BaseModel):
    """What Ollama needs besides the weights to chat the way the model was trained to."""

    # An Ollama (Go) template; None lets Ollama derive one from the chat template inside the GGUF.
    template: str | None = None
    stop: list[str] = Field(default_factory=list)  # every end-of-turn token
    system: str | None = None

    def save_beside(self, gguf: Path) -> Path:
        path = params_path(gguf)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load_beside(cls, gguf: Path) -> ChatParams:
        path = params_path(gguf)
        return cls.model_validate_json(path.read_text()) if path.is_file() else cls()


def params_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + PARAMS_SUFFIX)


def host_url(host: str | None = None) -> str:
    """OLLAMA_HOST as the ollama CLI reads it (host, host:port or a URL), else the local default."""
    raw = (host or os.environ.get("OLLAMA_HOST") or "").strip().rstrip("/")
    if not raw:
        return DEFAULT_HOST
    if "://" not in raw:
        raw = "http://" + raw
    scheme, rest = raw.split("://", 1)
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("0.0.0.0"):  # a bind-all listen address; connect to this machine
        hostport = "127.0.0.1" + hostport[len("0.0.0.0") :]
    if not re.search(r":\d+$", hostport):
        hostport += ":443" if scheme == "https" else ":11434"
    return f"{scheme}://{hostport}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid Ollama model name: use letters, digits and ._- (optionally :tag), "
            "e.g. support-bot or support-bot:v2"
        )
    return name


def with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def register_later_command(job_id: str, name: str) -> str:
    return f"forgectl export {job_id} --register-only --name {name}"


def register(
    gguf: Path,
    name: str,
    params: ChatParams,
    host: str | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    timeout: float = 600.0,
) -> str:
    """Create `name` in Ollama from the GGUF; returns the name as `ollama list` shows it (with its tag).

    Raises OllamaUnavailable when nothing answers and OllamaRefused when Ollama rejects a step.
    """
    import httpx  # the ollama client's own transport
    import ollama

    base = host_url(host)
    client = ollama.Client(host=base, timeout=timeout)
    try:
        digest = file_digest(gguf)
        if _has_blob(base, digest):
            progress(f"Ollama already has the GGUF ({digest[:19]}…)")
        else:
            progress(f"pushing the GGUF to Ollama at {base} ({gguf.stat().st_size / 1e6:.1f} MB)")
            pushed = client.create_blob(gguf)
            if pushed != digest:
                raise OllamaRefused(f"Ollama stored the GGUF as {pushed}, expected {digest}")
        parameters: dict[str, Any] = {"stop": params.stop} if params.stop else {}
        for part in client.create(
            model=name,
            files={gguf.name: digest},
            template=params.template,
            system=params.system,
            parameters=parameters or None,
            stream=True,
        ):
            if part.status:
                progress(f"ollama: {part.status}")
        listed = {m.model for m in client.list().models}
    except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise OllamaUnavailable(f"Ollama is not reachable at {base} ({_reason(exc)})") from exc
    except ollama.ResponseError as exc:
        raise OllamaRefused(f"Ollama at {base} refused the model: {exc.error}") from exc
    except httpx.HTTPError as exc:
        raise OllamaRefused(f"talking to Ollama at {base} failed: {exc}") from exc
    finally:
        client.close()
    tagged = with_tag(name)
    if tagged not in listed:
        raise OllamaRefused(f"Ollama reported success but does not list {tagged} (it lists {sorted(listed)})")
    return tagged


def _has_blob(base: str, digest: str) -> bool:
    import httpx

    # The official client has no HEAD call; this is the documented `HEAD /api/blobs/:digest`.
    response = httpx.head(f"{base}/api/blobs/{digest}", timeout=30.0)
    if response.status_code == 200:
        return True
    if response.status_code == 404:
        return False
    raise OllamaRefused(f"Ollama answered HEAD /api/blobs with {response.status_code}: {_body(response)}")


def _body(response: Any) -> str:
    try:
        return str(json.loads(response.text).get("error", response.text))
    except (ValueError, AttributeError):
        return str(response.text)[:200]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() or "Failed to connect" in text else text
