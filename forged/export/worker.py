"""`python -m forged.export.worker --spec FILE`: merged HF directory in, verified GGUF out.

The heavy half of an export (numpy, torch for the parity gate, llama.cpp), so it runs as the job's own
process, never inside forged. It speaks the runner protocol (docs/runner-protocol.md): JSON event lines on
stdout, exit 0 with a `gguf` artifact, exit 2 with an `error` event when the model cannot be exported or the
GGUF does not behave like the model it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from runner_image import events

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT = 0, 1, 2
# Used when the job's data has no usable user turns: the gate needs some prompts, not these in particular.
FALLBACK_PROMPTS = ("Hello! What can you help me with?", "Where is my order?", "Summarise your purpose.")
PARITY_PROMPTS = 3


class ConvertSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    merged_dir: str
    gguf_path: str
    quant: str = "f16"
    verify: bool = True
    prompts_file: str | None = None  # chat JSONL; its first user turns become the parity prompts


def parity_prompts(prompts_file: str | None, limit: int = PARITY_PROMPTS) -> list[list[dict[str, Any]]]:
    """The first conversations of the job's own data: what the tuned model is meant to answer."""
    found: list[list[dict[str, Any]]] = []
    if prompts_file and Path(prompts_file).is_file():
        with open(prompts_file, encoding="utf-8") as fh:
            for line in fh:
                try:
                    messages = json.loads(line).get("messages")
                except (ValueError, AttributeError):
                    continue
                if isinstance(messages, list) and any(m.get("role") == "user" for m in messages):
                    found.append(messages)
                if len(found) >= limit:
                    break
    return found or [[{"role": "user", "content": p}] for p in FALLBACK_PROMPTS[:limit]]


def convert_and_verify(spec: ConvertSpec) -> int:
    from forged.export import gguf_writer, parity
    from forged.export.chat_params import chat_params

    merged, gguf = Path(spec.merged_dir), Path(spec.gguf_path)
    events.log(f"converting {merged} to GGUF ({spec.quant})")
    gguf_writer.convert(merged, gguf, out_type=spec.quant, progress=events.log)
    if spec.verify:
        events.log("parity gate: comparing the GGUF in llama.cpp with the merged model in transformers")
        report = parity.verify(merged, gguf, parity_prompts(spec.prompts_file), spec.quant)
        events.log(report.report)
        if not report.passed:
            rejected = gguf.with_name(gguf.name + ".rejected")
            os.replace(gguf, rejected)
            events.error(
                "parity",
                "the GGUF does not behave like the merged model, so it was not published",
                hint=f"the report is in the job log; the rejected file is {rejected}",
            )
            return EXIT_BAD_INPUT
    else:
        events.log("parity gate skipped (--skip-verify)", level="warning")
    chat_params(merged).save_beside(gguf)
    events.artifact("gguf", str(gguf))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"
    parser = argparse.ArgumentParser(prog="python -m forged.export.worker")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    try:
        spec = ConvertSpec.model_validate_json(Path(args.spec).read_text())
    except (OSError, ValidationError) as exc:
        events.error("bad_spec", f"invalid export spec {args.spec}: {exc}")
        return EXIT_BAD_INPUT
    from forged.export.errors import ExportError

    try:
        return convert_and_verify(spec)
    except ExportError as exc:
        events.error("export", str(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        events.log(traceback.format_exc(), level="error")
        hint = "this is a bug in the export; the job log has the traceback"
        events.error("internal", f"{type(exc).__name__}: {exc}", hint=hint)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
