"""Runs the trainer as a subprocess on this host, in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil

from forged.executors.base import QLORA_CHECK, RunRequest, qlora_check_answer, qlora_check_failed

# Importing torch and initialising CUDA on a busy machine, with room to spare.
QLORA_CHECK_SECONDS = 120
# Secrets the daemon may hold in its environment that a training job has no business seeing.
_SCRUBBED = ("FORGE_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")


class LocalHandle:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc
        try:
            self._started: float | None = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            self._started = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def pid_started(self) -> float | None:
        return self._started

    def lines(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        return self._proc.wait()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)


class LocalExecutor:
    name = "local"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        # Per GPU set, for forged's lifetime: installing bitsandbytes under a running forged needs a restart.
        self._qlora: dict[tuple[int, ...], str] = {}

    def _environment(self, gpu_indices: tuple[int, ...] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(
            PYTHONUNBUFFERED="1",
            TOKENIZERS_PARALLELISM="false",
            # The runner ties its life to this process (see runner_image/lifeline.py): if forged dies, the
            # runner checkpoints and exits instead of training on as an orphan nobody supervises.
            FORGE_PARENT_PID=str(os.getpid()),
        )
        env.update(gpu_environment(gpu_indices))
        return env

    def start(self, request: RunRequest) -> LocalHandle:
        proc = subprocess.Popen(
            [self.python, "-m", *request.entry, "--spec", str(request.spec_path)],
            cwd=request.workspace,
            env=self._environment(request.gpu_indices),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        return LocalHandle(proc)

    def qlora_missing(self, gpu_indices: tuple[int, ...]) -> str:
        """Asks the runner's own interpreter, with the job's GPUs visible, what the runner itself would."""
        if gpu_indices in self._qlora:
            return self._qlora[gpu_indices]
        where = f"the runner's Python, {self.python}"
        try:
            done = subprocess.run(
                [self.python, "-m", *QLORA_CHECK],
                env=self._environment(gpu_indices),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=QLORA_CHECK_SECONDS,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return qlora_check_failed(where, str(exc))
        answer = qlora_check_answer(done.returncode, done.stdout, done.stderr, where)
        if done.returncode == 0:
            self._qlora[gpu_indices] = answer
        return answer


def gpu_environment(gpu_indices: tuple[int, ...] | None) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for exactly these GPUs; empty for no placement.

    CUDA numbers GPUs fastest first unless told otherwise, NVML by PCI bus; PCI_BUS_ID order makes the
    indices the scheduler chose from NVML name the same cards for CUDA. An empty tuple hides every GPU.
    """
    if gpu_indices is None:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_indices))}


def stop_stale_process(pid: int, started: float | None, grace: float) -> bool:
    """Stop a runner left from a previous forged, if it is still that process; True if one was found.

    The create time guards against a recycled pid. A runner whose daemon died gets SIGTERM from the kernel
    and is writing its checkpoint, so it gets `grace` seconds to finish before it is killed.
    """
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 1.0:
            return False
    except psutil.Error:
        return False
    try:
        proc.wait(timeout=grace)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.wait(timeout=10)
    except psutil.Error:
        pass
    return True
