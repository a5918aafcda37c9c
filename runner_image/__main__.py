"""`python -m runner_image run --spec SPEC.json`: the trainer forged starts (see docs/runner-protocol.md).

Also `python -m runner_image merge --spec MERGE.json`, which folds a job's adapter into its base model (the
first step of an export); `python -m runner_image build-tiny --out DIR [--family FAMILY]`, which writes a
built-in tiny model as an ordinary Hugging Face directory (for export and tests); and `python -m runner_image
smoke`, which reports as JSON whether this image can train on this machine (docs/runner-images.md); and
`python -m runner_image qlora-check`, which says whether 4-bit training can run here (qlora_support.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from runner_image import events
from runner_image.errors import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK, RunnerError
from runner_image.tiny_tokenizers import FAMILIES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner_image", description="Forge's trainer.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train as described by a runner spec; events go to stdout as JSON lines")
    run.add_argument("--spec", required=True, help="path to the runner spec JSON")
    merge = sub.add_parser("merge", help="merge a LoRA adapter into its base model as safetensors")
    merge.add_argument("--spec", required=True, help="path to the merge spec JSON")
    tiny = sub.add_parser("build-tiny", help="save the built-in tiny model and tokenizer as an HF directory")
    tiny.add_argument("--out", required=True, help="directory to write")
    tiny.add_argument(
        "--family", choices=FAMILIES, default="smollm", help="which tiny-<family> (default: tiny)"
    )
    sub.add_parser("smoke", help="check that this image can train on this machine; prints a JSON report")
    sub.add_parser("qlora-check", help='whether 4-bit training can run here: {"qlora": "<what is missing>"}')
    return parser


def _quiet_libraries() -> None:
    # Library chatter on stderr becomes log events in forged; keep it to what a user could act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _run(spec_path: str) -> int:
    from runner_image import lifeline, signals
    from runner_image.spec import load_spec

    stop = signals.StopFlag()
    # Installed before the heavy imports so that an early SIGTERM is not a hard kill either, and before
    # binding to the parent, whose death (or absence) arrives as SIGTERM too.
    signals.install(stop)
    lifeline.bind_to_parent()
    spec = load_spec(spec_path)
    _quiet_libraries()
    from runner_image.train import run

    return run(spec, stop)


def _merge(spec_path: str) -> int:
    from runner_image import lifeline
    from runner_image.spec import load_merge_spec

    # A merge keeps nothing worth saving on SIGTERM: the default handler ends it, and forged reruns it.
    lifeline.bind_to_parent()
    spec = load_merge_spec(spec_path)
    _quiet_libraries()
    from runner_image.merge import merge_adapter

    merge_adapter(spec)
    return EXIT_OK


def _build_tiny(out: str, family: str) -> int:
    _quiet_libraries()
    from runner_image.tiny import pipeline_check_warning, save_tiny

    events.log(pipeline_check_warning(family), level="warning")
    path = save_tiny(out, family)
    events.artifact("tiny", str(path))
    return EXIT_OK


def _smoke() -> int:
    _quiet_libraries()
    from runner_image.smoke import main as smoke_main

    return smoke_main()


def main(argv: list[str] | None = None) -> int:
    # The runner never talks to the Hugging Face Hub: models come from local directories (or are built), and a
    # lookup without network can hang on DNS. Set before anything imports huggingface_hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        # argparse already printed usage to stderr; still say why on the event stream.
        if e.code not in (0, None):
            events.error(
                "bad_arguments", "invalid command line", hint="python -m runner_image run --spec FILE"
            )
            return EXIT_BAD_INPUT
        return EXIT_OK
    try:
        if args.command == "run":
            return _run(args.spec)
        if args.command == "smoke":
            return _smoke()
        if args.command == "qlora-check":
            from runner_image.qlora_support import main as qlora_check

            return qlora_check()
        if args.command == "merge":
            return _merge(args.spec)
        return _build_tiny(args.out, args.family)
    except RunnerError as e:
        events.error(e.code, e.message, e.hint)
        return e.exit_code
    except Exception as e:
        tb = traceback.format_exc()
        events.log(tb, level="error")
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
            events.error("oom", str(e), hint="lower micro_batch_size or max_seq_len")
        else:
            events.error(
                "internal", f"{type(e).__name__}: {e}", hint="this is a bug in the runner; see the log"
            )
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
