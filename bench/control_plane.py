"""Control-plane benchmark against a real forged on a real socket.

Measures, with N concurrent clients (threads, one channel each):
  - Submit latency (p50/p99) and throughput; forged runs with --max-jobs 0 so no trainer competes for CPU.
  - Watch fan-out latency: N clients follow one real tiny training job (forged with --max-jobs 1, so the
    trainer competes for the same 2 cores); each event's latency is from its commit in forged (its `time`)
    to its arrival at a client. The runner -> forged pipe before the commit is a line-buffered pipe.
  - forged's start time (exec to healthy) and idle resident memory; and that it never imported torch.
Targets (issue 2): submit p99 < 5 ms at 50 clients; event p99 < 50 ms; idle RSS < 150 MB; start < 2 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC
from pathlib import Path

import grpc
import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from forge.v1 import jobs_pb2, jobs_pb2_grpc
from harness import EXAMPLE_CSV, Forged


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def bench_submit(
    d: Forged, spec: jobs_pb2.JobSpec, clients: int, per_client: int, interval: float
) -> tuple[list[float], float]:
    """`clients` threads, one channel each, submit `per_client` jobs.

    interval > 0: each client submits once per interval, at a random phase (open loop: the load a box
    of users offers, whatever the daemon's speed). interval == 0: back to back (closed loop: saturation).
    """
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(phase: float) -> None:
        with grpc.insecure_channel(d.address) as ch:
            stub = jobs_pb2_grpc.JobsStub(ch)
            stub.List(jobs_pb2.ListJobsRequest(limit=1), timeout=10)  # connect before the clock starts
            barrier.wait()
            mine = []
            next_at = time.perf_counter() + phase
            for _ in range(per_client):
                if interval:
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval
                t0 = time.perf_counter()
                stub.Submit(jobs_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), spec=spec), timeout=30)
                mine.append((time.perf_counter() - t0) * 1000)
            with lock:
                latencies.extend(mine)

    rng = random.Random(0)
    threads = [threading.Thread(target=client, args=(rng.uniform(0, interval),)) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, len(latencies) / (time.perf_counter() - t0)


def bench_watch(d: Forged, spec: jobs_pb2.JobSpec, watchers: int, seconds: float) -> list[float]:
    """N clients follow one real training job; each event's latency is commit time -> arrival."""
    job = d.submit(spec)
    d.wait_until(job.id, lambda j: j.metrics.steps >= 1, timeout=120)
    start_seq = d.get(job.id).last_seq
    latencies: list[float] = []
    lock = threading.Lock()

    def watcher() -> None:
        mine = []
        with grpc.insecure_channel(d.address) as ch:
            stream = jobs_pb2_grpc.JobsStub(ch).Watch(
                jobs_pb2.WatchJobRequest(id=job.id, after_seq=start_seq, follow=True), timeout=seconds
            )
            try:
                for ev in stream:
                    mine.append((time.time() - ev.time.ToDatetime(tzinfo=UTC).timestamp()) * 1000)
            except grpc.RpcError:  # the deadline ends the measurement
                pass
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=watcher) for _ in range(watchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d.jobs.Cancel(jobs_pb2.CancelJobRequest(id=job.id), timeout=30)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument(
        "--interval", type=float, default=1.0, help="seconds between one client's submits (open loop)"
    )
    ap.add_argument("--watch-seconds", type=float, default=20.0)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        t0 = time.perf_counter()
        d = Forged(Path(tmp) / "state", "--max-jobs", "0").start()
        start_s = time.perf_counter() - t0
        try:
            spec = d.train_spec(EXAMPLE_CSV, max_steps=10)
            time.sleep(1.0)
            proc = psutil.Process(d.proc.pid)  # type: ignore[union-attr]
            idle_rss = proc.memory_info().rss / 2**20
            torch_loaded = any("torch" in m.path for m in proc.memory_maps())
            lat, _ = bench_submit(d, spec, args.clients, args.per_client, args.interval)
            sat, rate = bench_submit(d, spec, args.clients, args.per_client, 0.0)
        finally:
            d.cleanup()
        w = Forged(Path(tmp) / "state-watch", "--max-jobs", "1").start()
        try:
            long_job = w.train_spec(
                EXAMPLE_CSV, max_steps=100_000, checkpoint_every=100_000, eval_every=100_000
            )
            watch = bench_watch(w, long_job, args.clients, args.watch_seconds)
        finally:
            w.cleanup()

    table = Table(title=f"forged control plane ({args.clients} concurrent clients)")
    for col in ("metric", "value", "target"):
        table.add_column(col)
    table.add_row("start to healthy", f"{start_s:.2f} s", "< 2 s")
    table.add_row("idle RSS", f"{idle_rss:.0f} MB", "< 150 MB")
    table.add_row("torch loaded in forged", str(torch_loaded), "False")
    load = f"{args.clients} clients x 1 per {args.interval:g} s"
    table.add_row(f"submit p50 ({load})", f"{pct(lat, 50):.2f} ms", "")
    table.add_row(f"submit p99 ({load})", f"{pct(lat, 99):.2f} ms", "< 5 ms")
    table.add_row("submit throughput, back to back", f"{rate:.0f} /s", "")
    table.add_row("submit p50 / p99, back to back", f"{pct(sat, 50):.1f} / {pct(sat, 99):.1f} ms", "")
    table.add_row("event to watcher p50", f"{pct(watch, 50):.2f} ms", "")
    table.add_row("event to watcher p99", f"{pct(watch, 99):.2f} ms", "< 50 ms")
    table.add_row(
        "events delivered", f"{len(watch)} ({len(watch) // max(1, args.clients)} x {args.clients})", ""
    )
    console.print(table)


if __name__ == "__main__":
    main()
