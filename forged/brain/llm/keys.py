"""API keys for the LLM brains, kept by forged per user: never in a project, never in a log.

Stored under forged's state dir as keys/<user>.json (directory 0700, file 0600, replaced atomically so a
crash never leaves half a key). A user without a stored key falls back to the key in forged's own
environment (GEMINI_API_KEY, then GOOGLE_API_KEY), as the google-genai SDK itself would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

KINDS = ("gemini", "local")
ENV_KEYS: dict[str, tuple[str, ...]] = {"gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "local": ()}
_SAFE_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_KEY = 512


class KeyStoreError(ValueError):
    """A key or kind that cannot be stored; str() says what to give instead."""


class KeyStore:
    def __init__(self, root: Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()

    def _path(self, user: str) -> Path:
        # Names come from tokens or, on a private socket, from a header: never let one escape the directory.
        name = user if _SAFE_USER.match(user) else "u-" + hashlib.sha256(user.encode()).hexdigest()[:32]
        return self.root / f"{name}.json"

    def _read(self, user: str) -> dict[str, str]:
        try:
            data = json.loads(self._path(user).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def set(self, user: str, kind: str, key: str) -> bool:
        """Store `key` for `user`'s `kind` brain, or forget it when `key` is empty; True when stored."""
        if kind not in KINDS:
            raise KeyStoreError(f"no brain {kind!r} takes a key: use {' or '.join(KINDS)}")
        key = key.strip()
        if len(key) > _MAX_KEY or any(c.isspace() or not c.isprintable() for c in key):
            raise KeyStoreError(
                f"that {kind} key is not a key (spaces, control characters or over {_MAX_KEY} characters): "
                "paste the key alone"
            )
        with self._lock:
            keys = self._read(user)
            if key:
                keys[kind] = key
            else:
                keys.pop(kind, None)
            self._write(self._path(user), keys)
        return bool(key)

    def _write(self, path: Path, keys: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # mkdir's mode is masked by the umask, and an existing dir keeps its own
        if not keys:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        # mkstemp creates the file 0600 from the start: there is no moment when another user could read it.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".key-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(keys, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, user: str, kind: str) -> tuple[str, str] | None:
        """(key, where it came from) for messages that must not show the key; None when there is none."""
        stored = self._read(user).get(kind)
        if stored:
            return stored, "the key stored with `forgectl login`"
        for name in ENV_KEYS.get(kind, ()):
            value = self.environ.get(name, "").strip()
            if value:
                return value, f"{name} in forged's environment"
        return None
