"""Run a processing script in a bubblewrap sandbox: no network, read-only input, one writable directory.

The script may come from an LLM or from a user, so it is treated as hostile: bubblewrap gives it fresh
namespaces (no network, no view of other processes), a clean environment (no keys), read-only binds of only
what Python needs, its input read-only at /in, one writable /out, a private /tmp and an unprivileged uid.
Resource limits are set in the child before bubblewrap starts and inherited by everything inside: CPU
seconds, address space, processes (fork bombs) and file size; a wall-time limit kills the whole tree.

When forged runs as root, bubblewrap itself is started as `nobody`: the kernel does not apply the process
limit to uid 0, and inside a user namespace the sandbox's uid maps back to the caller's, so a root caller
would leave a fork bomb unbounded.

Without bubblewrap only Forge's own template scripts run (rlimits alone); anything else is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
INSTALL_HINT = "install bubblewrap: apt-get install bubblewrap"
_TAIL_BYTES = 4000
_POLL_S = 0.05


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing and the script is not one of Forge's own templates."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 600
    memory_bytes: int = 8 << 30  # address space, which over-counts resident memory by the runtime's maps
    processes: int = 64  # on top of those the sandbox's uid already runs
    file_bytes: int = 8 << 30
    wall_seconds: float = 900.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    stdout_tail: str
    stderr_tail: str
    reason: str  # one line when the sandbox stopped the script (timed out, memory limit, ...); else ""
    sandboxed: bool  # False: ran with rlimits only (no bubblewrap)
    wall_seconds: float
    out_dir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.reason

    def failure(self) -> str:
        """One line: why the script failed, with the last line it wrote to stderr."""
        last = next((ln.strip() for ln in reversed(self.stderr_tail.splitlines()) if ln.strip()), "")
        why = self.reason or f"exited with status {self.returncode}"
        return f"{why}: {last[:300]}" if last else why


def bwrap() -> str | None:
    return shutil.which("bwrap")


@contextlib.contextmanager
def run_script(
    script: str,
    inputs: Mapping[str, Path],
    args: Sequence[str] = (),
    limits: Limits = DEFAULT_LIMITS,
    *,
    trusted: bool = False,
    while_running: Callable[[Path], bool] | None = None,
) -> Iterator[SandboxResult]:
    """Run `script` as `python script --output /out ARGS` with each of `inputs` read-only at /in/NAME.

    Yields the result while its out_dir (what the script wrote to /out) still exists; it is removed after.
    `trusted` is for Forge's own template scripts only: they may run without bubblewrap.
    `while_running(out_dir)` is called instead of idling while the script runs, to read its output as it
    grows; it should return within a fraction of a second, True when it found work (it is called again at
    once) and False when there was none.
    """
    wrapper = bwrap()
    if wrapper is None and not trusted:
        raise SandboxUnavailable(f"cannot run a processing script safely: {INSTALL_HINT}")
    drop = wrapper is not None and os.geteuid() == 0
    run_dir = Path(tempfile.mkdtemp(prefix="forge-sandbox-"))
    try:
        in_dir, out_dir = run_dir / "in", run_dir / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        # Copies, not binds of the originals: the sandbox's uid may not reach forged's state directory.
        for name, src in inputs.items():
            shutil.copyfile(src, in_dir / name)
        (in_dir / "script.py").write_text(script, encoding="utf-8")
        for path in (run_dir, in_dir, *in_dir.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if drop:
            os.chown(out_dir, NOBODY, NOBODY)
        python = _interpreter(world=drop)
        if wrapper is not None:
            argv = [*_bwrap_argv(wrapper, python, in_dir, out_dir), python, "-I", "-S", "/in/script.py"]
            argv += ["--output", "/out", *args]
            cwd = "/"
        else:
            # No bubblewrap: the paths the script sees are the real ones.
            argv = [python, "-I", "-S", str(in_dir / "script.py"), "--output", str(out_dir)]
            argv += [a.replace("/in/", f"{in_dir}/", 1) if a.startswith("/in/") else a for a in args]
            cwd = str(out_dir)
        yield _run(
            argv, cwd, run_dir, out_dir, limits, drop=drop, sandboxed=wrapper is not None, busy=while_running
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _interpreter(world: bool) -> str:
    """The Python to run scripts with; one every uid can reach when the sandbox runs as nobody."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    candidates = [base, os.path.realpath("/usr/bin/python3")]
    for path in candidates:
        if os.access(path, os.X_OK) and (not world or _world_reachable(Path(path))):
            return path
    raise SandboxUnavailable(
        f"no Python interpreter that an unprivileged user can run (tried {', '.join(candidates)}): "
        "install python3 system-wide (apt-get install python3)"
    )


def _world_reachable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents) and bool(
        path.stat().st_mode & stat.S_IROTH
    )


def _bwrap_argv(wrapper: str, python: str, in_dir: Path, out_dir: Path) -> list[str]:
    argv = [wrapper, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        path = Path(top)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(top), top]
        elif path.is_dir():
            argv += ["--ro-bind", top, top]
    prefix = Path(python).parent.parent
    if not prefix.is_relative_to("/usr"):
        argv += ["--ro-bind", str(prefix), str(prefix)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--ro-bind", str(in_dir), "/in", "--bind", str(out_dir), "/out", "--chdir", "/out"]
    argv += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--"]
    return argv


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxUnavailable(
            f"{name} is missing, so no resource limits can be set: apt-get install util-linux"
        )
    return path


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


def _run(
    argv: list[str],
    cwd: str,
    run_dir: Path,
    out_dir: Path,
    limits: Limits,
    *,
    drop: bool,
    sandboxed: bool,
    busy: Callable[[Path], bool] | None = None,
) -> SandboxResult:
    uid = NOBODY if drop else os.getuid()
    # The kernel counts every process of the uid against the limit, so leave room for those already running.
    nproc = _processes_of(uid) + limits.processes

    # Limits and the uid switch are set by util-linux's prlimit and setpriv, which then exec the next step:
    # Python code between fork and exec (preexec_fn) can crash the child of a threaded daemon like forged.
    prefix = [
        _tool("prlimit"),
        # SIGXCPU at the soft limit names the cause; the hard one (SIGKILL) stops a script ignoring it.
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 2}",
        f"--as={limits.memory_bytes}",
        f"--nproc={nproc}",
        f"--fsize={limits.file_bytes}",
        "--core=0",
        "--",
    ]
    if drop:
        prefix += [_tool("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    argv = prefix + argv

    stdout_path, stderr_path = run_dir / "stdout", run_dir / "stderr"
    started = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,  # its own process group, so the wall-time kill takes the whole tree
        )
    timed_out = False
    status = 0
    try:
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > limits.wall_seconds:
                timed_out = True
                _kill_tree(proc.pid)
                _, status = os.waitpid(proc.pid, 0)
                break
            if busy is None or not busy(out_dir):
                time.sleep(_POLL_S)
    except BaseException:
        _kill_tree(proc.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, 0)
        raise
    finally:
        proc.returncode = -1  # reaped here: keep Popen from waiting on a pid that is gone
    elapsed = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if sandboxed and code > 128:  # bubblewrap reports a child killed by signal N as 128 + N
        code = -(code - 128)
    stderr_tail = _tail(stderr_path)
    return SandboxResult(
        returncode=code,
        stdout_tail=_tail(stdout_path),
        stderr_tail=stderr_tail,
        reason=_reason(code, stderr_tail, limits, timed_out=timed_out),
        sandboxed=sandboxed,
        wall_seconds=elapsed,
        out_dir=out_dir,
    )


def _kill_tree(pid: int) -> None:
    # bubblewrap dies with its group, and --die-with-parent plus its pid namespace take everything inside.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


_MIB = 1 << 20
_FORK_FAILED = re.compile(r"BlockingIOError|Resource temporarily unavailable|can't start new thread")


def _reason(code: int, stderr: str, limits: Limits, *, timed_out: bool) -> str:
    if timed_out:
        return f"timed out: stopped after the {limits.wall_seconds:g} s wall-time limit"
    if code == -signal.SIGXCPU:
        return f"CPU-time limit reached: stopped after {limits.cpu_seconds} CPU seconds"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return f"memory limit reached: the script asked for more than {limits.memory_bytes // _MIB} MiB"
    if code == -signal.SIGXFSZ or "File too large" in stderr:
        return f"file too large: the script wrote past the {limits.file_bytes // _MIB} MiB file-size limit"
    if _FORK_FAILED.search(stderr):
        return f"too many processes: the script hit the limit of {limits.processes} processes"
    if code == -signal.SIGKILL:
        return "killed (SIGKILL): the hard CPU-time limit or the kernel's out-of-memory killer stopped it"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return ""
