"""A GGUF loaded in real llama.cpp (the `xllamacpp` wheel) on the CPU, for the parity gate.

xllamacpp runs llama.cpp's own server in-process on a loopback port; talking to its native endpoints
(/tokenize, /completion) exercises the same tokenizer, sampler and end-of-generation logic that Ollama and
llama-server users get, rather than a re-implementation of them.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from forged.export.errors import ExportError


class LlamaCpp:
    """Use as a context manager: the model is loaded on enter and freed on exit."""

    def __init__(self, gguf_path: Path, n_ctx: int = 2048, threads: int | None = None) -> None:
        self.gguf_path = Path(gguf_path)
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._server: Any = None
        self._base = ""

    def __enter__(self) -> LlamaCpp:
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - a packaging error, not a user input
            raise ExportError("the parity gate needs llama.cpp: pip install xllamacpp") from e
        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf_path)
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.n_gpu_layers = 0
        params.warmup = False
        params.verbosity = -1
        try:
            self._server = xllamacpp.Server(params)
        except Exception as e:
            raise ExportError(f"llama.cpp could not load {self.gguf_path.name}: {e}") from e
        self._base = self._server.listening_address
        return self

    def __exit__(self, *exc: object) -> None:
        self._server = None  # the server's destructor stops its loop and frees the model

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self._base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=300) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """llama.cpp's tokenization; special-token text (template markers) is parsed as the tokens."""
        result = self._post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True})
        return [int(t) for t in result["tokens"]]

    def complete(
        self, prompt: list[int], n_predict: int, n_probs: int, logit_bias: list[list[float]] | None = None
    ) -> dict[str, Any]:
        """Greedy completion of token ids, with the top n_probs log-probs (of the raw logits) per step."""
        return self._post(
            "/completion",
            {
                "prompt": prompt,
                "n_predict": n_predict,
                "n_probs": n_probs,
                "temperature": 0.0,
                "repeat_penalty": 1.0,
                "post_sampling_probs": False,
                "return_tokens": True,
                "cache_prompt": False,
                "logit_bias": logit_bias or [],
            },
        )
