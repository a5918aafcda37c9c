"""The export as the steps of a job: merge (runner), convert and verify (worker), register (here, over HTTP).

The two heavy steps are processes the job's executor starts, so the daemon stays free of torch; only the
Ollama registration runs in forged, since it is a few HTTP calls. Each step writes its output atomically, so
a step cut short (cancel, daemon shutdown) is simply run again by the job's next attempt.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from forge.export_options import DEFAULT_QUANT, QUANTS

from forged.export.ollama import (
    ChatParams,
    OllamaRefused,
    OllamaUnavailable,
    check_name,
    register,
    register_later_command,
)
from forged.store.jobs import JobRecord

MERGE_ENTRY = ("runner_image", "merge")
CONVERT_ENTRY = ("forged.export.worker",)


class StageHost(Protocol):
    """What the export needs from the supervisor of its job."""

    workspace: Path

    def run_step(self, entry: tuple[str, ...], spec: dict[str, Any], spec_name: str) -> int | None:
        """Run one process to its end; its exit status, or None when the job was stopped first."""
        ...

    def artifacts(self) -> dict[str, str]: ...

    def emit_artifact(self, name: str, path: str) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...

    def fail(self, code: str, message: str, hint: str = "") -> None: ...


@dataclass(frozen=True)
class ExportOptions:
    quant: str = DEFAULT_QUANT
    ollama_name: str = ""
    no_ollama: bool = False
    register_only: bool = False
    skip_verify: bool = False

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ExportOptions:
        return cls(
            quant=(spec.get("quant") or DEFAULT_QUANT).lower(),
            ollama_name=spec.get("ollama_name") or "",
            no_ollama=bool(spec.get("no_ollama")),
            register_only=bool(spec.get("register_only")),
            skip_verify=bool(spec.get("skip_verify")),
        )


def default_model_name(job_name: str) -> str:
    """An Ollama name from the job's: `Answer our customers' questions` -> answer-our-customers-questions."""
    slug = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:60].strip("-")
    return slug or "forge-model"


def check_options(options: ExportOptions) -> None:
    """ValueError with a line a user can act on for an option the export cannot honour."""
    if options.quant not in QUANTS:
        raise ValueError(f"unknown quantization {options.quant!r}: choose one of {', '.join(QUANTS)}")
    if options.ollama_name:
        check_name(options.ollama_name)
    if options.register_only and options.no_ollama:
        raise ValueError("--register-only and --no-ollama contradict each other: pick one")


def source_model(source: JobRecord) -> str:
    return str(source.spec.get("train", {}).get("model") or "tiny")


def run_export(
    host: StageHost,
    job_id: str,
    source: JobRecord,
    options: ExportOptions,
    runner_model: Callable[[], dict[str, str]],
) -> int | None:
    """Export `source`'s adapter (or register its GGUF) as job `job_id`; returns 0, a failing status, or
    None when stopped. `runner_model` resolves the base model the way training did (it may download)."""
    name = options.ollama_name or default_model_name(source.name)
    if options.register_only:
        gguf = source.artifacts.get("gguf", "")
        if "merged" in source.artifacts and source.id != job_id:
            host.emit_artifact("merged", source.artifacts["merged"])
        host.emit_artifact("gguf", gguf)
        return _register(host, job_id, Path(gguf), name, later_ok=False)

    out = host.workspace / "output"
    merged = out / "merged"
    code = host.run_step(
        MERGE_ENTRY,
        {"job_id": job_id, "model": runner_model(), "adapter_dir": source.artifacts["adapter"],
         "output_dir": str(merged)},
        "merge_spec.json",
    )  # fmt: skip
    if code != 0 or "merged" not in host.artifacts():
        return code if code != 0 else 1
    gguf = out / f"{name.replace(':', '-').replace('/', '-')}-{options.quant}.gguf"
    code = host.run_step(
        CONVERT_ENTRY,
        {"merged_dir": str(merged), "gguf_path": str(gguf), "quant": options.quant,
         "verify": not options.skip_verify, "prompts_file": _prompts_file(source)},
        "convert_spec.json",
    )  # fmt: skip
    if code != 0 or "gguf" not in host.artifacts():
        return code if code != 0 else 1
    if options.no_ollama:
        host.log(f"not registering with Ollama (--no-ollama); later: {register_later_command(job_id, name)}")
        return 0
    return _register(host, job_id, gguf, name, later_ok=True)


def _prompts_file(source: JobRecord) -> str | None:
    data = Path(source.workspace) / "data"
    for candidate in (data / "val.jsonl", data / "train.jsonl"):
        if candidate.is_file():
            return str(candidate)
    return None


def _register(host: StageHost, job_id: str, gguf: Path, name: str, *, later_ok: bool) -> int:
    if not gguf.is_file():
        host.fail("export", f"the GGUF {gguf} is gone", hint=f"export again: forgectl export {job_id}")
        return 2
    host.log(f"registering {gguf.name} with Ollama as {name}")
    try:
        listed = register(gguf, name, ChatParams.load_beside(gguf), progress=host.log)
    except OllamaUnavailable as exc:
        later = register_later_command(job_id, name)
        if later_ok:
            host.log(f"{exc}; the GGUF is ready at {gguf}. Register it later with: {later}", level="warning")
            return 0
        host.fail("ollama_unavailable", str(exc), hint=f"start Ollama (`ollama serve`), then run: {later}")
        return 2
    except OllamaRefused as exc:
        later = register_later_command(job_id, name)
        host.fail("ollama", str(exc), hint=f"the GGUF is at {gguf}; fix the cause, then: {later}")
        return 2
    host.emit_artifact("ollama", listed)
    host.log(f"registered with Ollama: ollama run {listed}")
    return 0


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec, indent=2))
    os.replace(tmp, path)
    return path
