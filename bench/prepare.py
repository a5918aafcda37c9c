"""Offline prepare benchmark: a generated CSV through the path Brain.Prepare takes without an LLM.

The steps timed are the daemon's: Forge's template script for the detected mapping runs in the bubblewrap
sandbox (reading the CSV, converting, writing prepared.jsonl), then forged validates every record and
splits train/val keeping near-duplicates on one side. Reports rows/s, the time of each phase (from one run,
so a loaded machine slows them alike) and peak resident memory of the sandboxed child and of the forged
side (this process, which does what forged does).
Target (issue 4): 1M rows in under 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forged.brain import ingest, sandbox
from forged.brain.ingest import prepare

_WORDS = ("order", "refund", "shipping", "account", "password", "invoice", "delivery", "tracking", "return")


def generate(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response"])
        for i in range(rows):
            ask = " ".join(rng.choices(_WORDS, k=rng.randint(6, 20)))
            answer = " ".join(rng.choices(_WORDS, k=rng.randint(10, 40)))
            w.writerow([f"Ticket {i}: {ask}?", f"Thanks for writing. {answer}."])


# The phases of ingest.prepare, by the module-level functions it calls for each.
_PHASES = {
    "normalize": "normalize",
    "peek_records": "sample for the mapping",
    "choose_val": "choose validation groups",
    "write_split": "split (copy runs of lines to train/val)",
    "_measure": "token and language sample (beside the split)",
}


def time_phases() -> dict[str, float]:
    """Wrap the functions prepare calls for each phase so one run reports where its time went."""
    spent: dict[str, float] = defaultdict(float)

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started

        return run

    for attr, label in _PHASES.items():
        setattr(ingest, attr, timed(label, getattr(ingest, attr)))
    check = ingest._check

    def sandboxed(result: sandbox.SandboxResult, *args: Any) -> Any:
        spent["script in the sandbox, validating alongside"] += result.wall_seconds
        started = time.perf_counter()
        try:
            return check(result, *args)
        finally:
            spent["validate what is left after it"] += time.perf_counter() - started

    ingest._check = sandboxed
    return spent


# Started from a small Python: a child forked from this process would report this process's peak as its own,
# because Linux carries the peak resident size across fork and exec.
_MEASURE = """
import os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = 0
cpu = usage.ru_utime + usage.ru_stime
print(usage.ru_maxrss, time.perf_counter() - started, cpu, os.waitstatus_to_exitcode(status))
"""


def script_peak(script: Path, src: Path, out: Path) -> tuple[float, float, float]:
    """The script's own peak memory, wall and CPU time: bubblewrap's pid-namespace init does not hand its
    child's usage up, so the script runs again outside the sandbox."""
    argv = [sys.executable, "-I", "-S", str(script), "--input", str(src), "--output", str(out)]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _MEASURE, *argv], capture_output=True, text=True, check=True
    )
    kib, seconds, cpu, code = done.stdout.split()[-4:]
    if code != "0":
        raise SystemExit(f"the script failed on its second run (exit {code})")
    return int(kib) / 1024, float(seconds), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-prepare-") as tmp:
        src = Path(tmp) / "tickets.csv"
        generate(src, args.rows, args.seed)
        mib = src.stat().st_size / (1 << 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        spent = time_phases()
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = prepare(src, src.name, Path(tmp) / "out", seed=args.seed)
        elapsed = time.perf_counter() - started
        own_cpu = time.process_time() - cpu_before
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = result.stats
        where = "bubblewrap" if sandbox.bwrap() else "rlimits only"
        print(f"input: {args.rows:,} rows, {mib:.0f} MiB CSV; sandbox: {where}")
        print(f"train {stats.train_examples:,} / val {stats.val_examples:,} / dropped {stats.dropped:,}")
        print(f"time: {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s (target: 1M rows under 20 s)")
        # The sample runs beside the split, so its time is already inside the split's.
        rest = elapsed - sum(v for k, v in spent.items() if "beside" not in k)
        for label, seconds in [*sorted(spent.items(), key=lambda kv: -kv[1]), ("the rest", rest)]:
            print(f"  {label:<46} {seconds:6.1f} s")
        script_mib, script_s, script_cpu = script_peak(
            result.train_data.parent / "prepare_script.py", src, Path(tmp) / "again"
        )
        print(f"peak RSS: forged side {own:.0f} MiB (at start {before / 1024:.0f} MiB)")
        print(
            f"peak RSS: the script {script_mib:.0f} MiB; {script_s:.1f} s, {script_cpu:.1f} CPU s "
            "(from a second, unsandboxed run)"
        )
        print(f"CPU: forged side {own_cpu:.1f} s during prepare")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
