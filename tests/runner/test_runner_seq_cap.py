"""The sequence cap (forged's third out-of-memory rung): the longest examples are cut to the 99th percentile
of the lengths, the runner says how many, and a run checkpointed without the cap continues under it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from runner_testlib import RunResult, parse_stdout, runner_cmd, runner_env, write_spec
from transformers import PreTrainedTokenizerBase

from runner_image.data import cap_lengths, load_dataset
from runner_image.errors import EXIT_CRASH

LONG_ANSWER = " ".join(f"step {i} of the procedure is to check the cable." for i in range(40))
LONG_QUESTION = " ".join(f"detail {i} of my setup is unusual." for i in range(60))


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _data(path: Path, short: int) -> Path:
    rows = [_chat(f"Question {i}: is {'very ' * (i % 7)}late?", f"Answer {i}: no.") for i in range(short)]
    # One long answer (it keeps its start when cut) and one long question whose short answer lies past
    # any cap near the others' lengths (nothing is left to train, so it goes).
    rows += [_chat("How do I fix the modem?", LONG_ANSWER), _chat(LONG_QUESTION, "Restart it.")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_examples_past_the_99th_percentile_are_cut_or_dropped(
    tiny_tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    ds = load_dataset(_data(tmp_path / "train.jsonl", short=200), tiny_tokenizer, max_seq_len=1024)
    lengths = sorted(len(e.input_ids) for e in ds.examples)
    assert len(lengths) == 202 and lengths[-2] > 300 and lengths[-3] < 100

    cap = cap_lengths(ds, 99)

    assert cap.length == lengths[199], "nearest rank: the 200th of 202 lengths"
    assert (cap.truncated, cap.dropped) == (1, 1)
    assert len(ds.examples) == len(ds.kinds) == 201
    assert max(len(e.input_ids) for e in ds.examples) == cap.length
    assert all(e.trained_tokens > 0 for e in ds.examples)


def _run(spec: Path, cwd: Path, faults: list[dict[str, Any]] | None = None) -> RunResult:
    env = runner_env()
    env.pop("FORGE_FAULTS", None)
    if faults:
        env["FORGE_FAULTS"] = json.dumps(faults)
    proc = subprocess.run(
        runner_cmd("run", "--spec", str(spec)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    events, other = parse_stdout(proc.stdout)
    return RunResult(proc.returncode, events, proc.stderr, other)


def test_a_run_out_of_memory_continues_from_its_checkpoint_with_the_cap(tmp_path: Path) -> None:
    data = _data(tmp_path / "train.jsonl", short=200)  # the 99th percentile of 202 is the 200th length
    hparams = {"max_steps": 4, "micro_batch_size": 4, "grad_accum": 1, "checkpoint_every": 2, "eval_every": 0}
    hparams["max_seq_len"] = 1024  # room for both long examples, so the cap is what cuts them
    first = _run(
        write_spec(tmp_path, train_file=data, val_file=None, **hparams),
        tmp_path,
        [{"kind": "oom", "step": 3}],
    )
    assert first.rc == EXIT_CRASH and first.of("error")[-1]["code"] == "oom"
    assert first.of("checkpoint")[-1]["step"] == 2

    # What forged's remedy writes for the next attempt: the same spec with the cap turned on.
    capped = write_spec(tmp_path, train_file=data, val_file=None, seq_cap_percentile=99, **hparams)
    second = _run(capped, tmp_path)

    assert second.rc == 0, second.stderr[-2000:]
    logs = [e["message"] for e in second.of("log")]
    said = next(m for m in logs if m.startswith("sequence cap: "))
    assert "the 99th percentile of their lengths (max_seq_len 1024): 1 truncated, 1 dropped" in said
    assert "resumed from checkpoint step 2" in logs
    assert [s["step"] for s in second.of("step")] == [3, 4]
