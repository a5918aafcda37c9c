"""`forgectl inference`: chat with an exported model, streaming tokens as they come.

The best engine at hand answers: Ollama when the job's model is registered there and Ollama answers, else
llama.cpp (the xllamacpp wheel) on the GGUF, else transformers on the merged directory. The files are the
ones the daemon wrote, so the last two need this machine to see the daemon's paths (the per-user daemon).
Engines are imported only when picked: a plain `forgectl` never loads llama.cpp or torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from forge.v1 import jobs_pb2

from forgectl.client import ForgeError

Messages = list[dict[str, str]]
OnToken = Callable[[str], None]
MAX_TOKENS = 256


class Engine(Protocol):
    label: str

    def reply(self, messages: Messages, on_token: OnToken) -> str:
        """Generate the assistant's answer, calling on_token with each new piece; returns the whole text."""
        ...


class OllamaEngine:
    def __init__(self, model: str, max_tokens: int) -> None:
        import ollama

        self.label = f"Ollama ({model})"
        self.model = model
        self.max_tokens = max_tokens
        self.client = ollama.Client()  # OLLAMA_HOST, as the ollama CLI reads it

    def reachable(self) -> bool:
        try:
            self.client.list()
        except (ConnectionError, OSError):
            return False
        except Exception:  # answered, but not as Ollama does: no use either
            return False
        return True

    def reply(self, messages: Messages, on_token: OnToken) -> str:
        parts: list[str] = []
        options = {"num_predict": self.max_tokens, "temperature": 0}
        for chunk in self.client.chat(model=self.model, messages=messages, stream=True, options=options):
            piece = chunk.message.content or ""
            parts.append(piece)
            on_token(piece)
        return "".join(parts)


class LlamaCppEngine:
    def __init__(self, gguf: Path, max_tokens: int) -> None:
        import xllamacpp

        self.label = f"llama.cpp ({gguf.name})"
        self.max_tokens = max_tokens
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        params.n_ctx = 2048
        params.n_parallel = 1
        params.n_gpu_layers = 0
        params.warmup = False
        params.verbosity = -1
        params.cpuparams.n_threads = max(1, min(4, os.cpu_count() or 1))
        self.server = xllamacpp.Server(params)

    def reply(self, messages: Messages, on_token: OnToken) -> str:
        parts: list[str] = []

        def chunk(data: Any) -> bool:
            if isinstance(data, str):
                data = json.loads(data)
            for choice in data.get("choices", []) if isinstance(data, dict) else []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    parts.append(piece)
                    on_token(piece)
            return False  # keep streaming

        request = {"messages": messages, "max_tokens": self.max_tokens, "temperature": 0, "stream": True}
        result = self.server.handle_chat_completions(request, chunk)
        if isinstance(result, dict) and result.get("error"):
            raise ForgeError(f"llama.cpp could not answer: {result['error']}")
        return "".join(parts)


class TransformersEngine:
    def __init__(self, model_dir: Path, max_tokens: int, label: str = "") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.label = label or f"transformers ({model_dir.name})"
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()

    def reply(self, messages: Messages, on_token: OnToken) -> str:
        from transformers import TextIteratorStreamer

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {**ids, "max_new_tokens": self.max_tokens, "do_sample": False, "streamer": streamer}
        worker = threading.Thread(target=self.model.generate, kwargs=kwargs, daemon=True)
        worker.start()
        parts = []
        for piece in streamer:
            parts.append(piece)
            on_token(piece)
        worker.join()
        return "".join(parts)


def pick_engine(job: jobs_pb2.Job, max_tokens: int, notice: Callable[[str], None]) -> Engine:
    """Ollama, else llama.cpp on the GGUF, else transformers on the merged model; says why it skipped one."""
    name = job.artifacts.get("ollama")
    if name:
        engine = OllamaEngine(name, max_tokens)
        if engine.reachable():
            return engine
        notice(f"Ollama is not reachable; answering from the files instead of {name}")
    gguf = job.artifacts.get("gguf")
    if gguf and Path(gguf).is_file():
        return LlamaCppEngine(Path(gguf), max_tokens)
    merged = job.artifacts.get("merged")
    if merged and Path(merged).is_dir():
        return TransformersEngine(Path(merged), max_tokens)
    if gguf or merged:
        raise ForgeError(
            f"job {job.id}'s model files ({gguf or merged}) are not on this machine: run forgectl inference "
            "where forged runs, or register the model with Ollama (forgectl export --register-only)"
        )
    raise ForgeError(f"job {job.id} has no exported model: run `forgectl export {job.id}` first")


def base_engine(job: jobs_pb2.Job, max_tokens: int) -> TransformersEngine:
    """The model before fine-tuning, for --compare-base (transformers: a base GGUF is never written)."""
    merged = job.artifacts.get("merged")
    info = Path(merged) / "forge_merge.json" if merged else None
    if info is None or not info.is_file():
        raise ForgeError(f"job {job.id} has no merged model on this machine to find its base from")
    base = json.loads(info.read_text())["base_model"]
    if base.get("kind") == "path":
        return TransformersEngine(Path(base["path"]), max_tokens, label="base")
    out = Path(tempfile.mkdtemp(prefix="forge-tiny-base-"))
    command = [sys.executable, "-m", "runner_image", "build-tiny", "--out", str(out)]
    built = subprocess.run(command, capture_output=True, text=True)
    if built.returncode != 0:
        raise ForgeError(f"could not build the tiny base model: {built.stdout[-300:]}")
    return TransformersEngine(out, max_tokens, label="base")
