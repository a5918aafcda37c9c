"""Offline prepare benchmark: a generated CSV through the path Brain.Prepare takes without an LLM.

The steps timed are the daemon's: Forge's template script for the detected mapping runs in the bubblewrap
sandbox (reading the CSV, converting, writing prepared.jsonl), then forged validates every record and
splits train/val keeping near-duplicates on one side. Reports rows/s and peak resident memory of the
sandboxed child and of the forged side (this process, which does what forged does).
Target (issue 4): 1M rows in under 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forged.brain import sandbox
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


def script_peak(script: Path, src: Path, out: Path) -> tuple[float, float]:
    """The script's own peak memory: bubblewrap's pid-namespace init does not hand its child's usage up."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(script), "--input", str(src), "--output", str(out)]
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024, time.perf_counter() - started


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
        started = time.perf_counter()
        result = prepare(src, src.name, Path(tmp) / "out", seed=args.seed)
        elapsed = time.perf_counter() - started
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = result.stats
        where = "bubblewrap" if sandbox.bwrap() else "rlimits only"
        print(f"input: {args.rows:,} rows, {mib:.0f} MiB CSV; sandbox: {where}")
        print(f"train {stats.train_examples:,} / val {stats.val_examples:,} / dropped {stats.dropped:,}")
        print(f"time: {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s (target: 1M rows under 20 s)")
        script_mib, script_s = script_peak(
            result.train_data.parent / "prepare_script.py", src, Path(tmp) / "again"
        )
        print(f"peak RSS: forged side {own:.0f} MiB (at start {before / 1024:.0f} MiB)")
        print(f"peak RSS: the script {script_mib:.0f} MiB ({script_s:.1f} s), from a second, unsandboxed run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
