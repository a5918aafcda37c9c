"""Hostile processing scripts under the real bubblewrap sandbox: each is contained and reported with why."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forged.brain import sandbox
from forged.brain.sandbox import Limits, SandboxResult

needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)
FAST = Limits(cpu_seconds=20, memory_bytes=1 << 30, processes=32, file_bytes=8 << 20, wall_seconds=20)


def run(tmp_path: Path, body: str, limits: Limits = FAST, *args: str) -> tuple[SandboxResult, list[str]]:
    data = tmp_path / "data.csv"
    data.write_text("prompt,response\nhi,hello\n")
    script = "import json, os, sys\n" + body
    with sandbox.run_script(script, {"data.csv": data}, args, limits) as result:
        files = sorted(p.name for p in result.out_dir.iterdir())
        return result, files


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's loopback; the sandbox must not reach it."""
    server = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        server.settimeout(10)
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    yield port, got
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # wake accept() so the thread ends
    thread.join(5)


@needs_bwrap
def test_well_behaved_script_sees_its_input_and_writes_out(tmp_path: Path) -> None:
    result, files = run(
        tmp_path,
        "rows = open('/in/data.csv').read().splitlines()\n"
        "open('/out/prepared.jsonl', 'w').write(json.dumps({'rows': len(rows), 'uid': os.getuid(),"
        " 'env': sorted(os.environ)}))\n"
        "print('done')\n",
    )
    assert result.ok and result.sandboxed and result.stdout_tail.strip() == "done"
    assert files == ["prepared.jsonl"]


@needs_bwrap
def test_no_network_not_even_the_hosts_loopback(tmp_path: Path, listener: tuple[int, list[bytes]]) -> None:
    port, got = listener
    result, _ = run(
        tmp_path,
        "import socket\n"
        "for host in ('127.0.0.1', '1.1.1.1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=3).sendall(b'leak')\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as exc:\n"
        "        print('blocked', host, type(exc).__name__)\n",
    )
    assert result.ok, result.failure()
    assert "CONNECTED" not in result.stdout_tail
    assert result.stdout_tail.count("blocked") == 2
    assert got == []


@needs_bwrap
def test_secrets_and_paths_outside_are_out_of_reach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-not-for-scripts")
    state = tmp_path / "state"
    state.mkdir()
    (state / "brain_keys.json").write_text('{"gemini": "secret"}')
    outside = tmp_path / "escaped.txt"
    targets = [str(Path.home() / ".ssh" / "id_rsa"), str(state / "brain_keys.json"), "/etc/shadow"]
    result, files = run(
        tmp_path,
        f"targets = {targets!r}\n"
        "for t in targets:\n"
        "    try:\n"
        "        open(t).read(); print('READ', t)\n"
        "    except OSError as exc:\n"
        "        print('denied', type(exc).__name__)\n"
        f"for t in ['/in/data.csv', '/usr/evil', {str(outside)!r}]:\n"
        "    try:\n"
        "        open(t, 'w').write('x'); print('WROTE', t)\n"
        "    except OSError as exc:\n"
        "        print('denied', type(exc).__name__)\n"
        "print(json.dumps({'uid': os.getuid(), 'env': sorted(os.environ)}))\n",
    )
    assert result.ok, result.failure()
    lines = result.stdout_tail.splitlines()
    assert [ln for ln in lines if ln.startswith(("READ", "WROTE"))] == []
    assert sum(ln.startswith("denied") for ln in lines) == 6
    seen = json.loads(lines[-1])
    assert seen["uid"] == sandbox.NOBODY
    assert "GEMINI_API_KEY" not in seen["env"] and set(seen["env"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PWD",
    }
    assert not outside.exists() and (tmp_path / "data.csv").read_text().startswith("prompt")
    assert files == []


@needs_bwrap
def test_fork_bomb_is_stopped(tmp_path: Path) -> None:
    result, _ = run(tmp_path, "while True:\n    os.fork()\n")
    assert not result.ok
    assert result.reason.startswith("too many processes"), result


@needs_bwrap
def test_unbounded_allocation_hits_the_memory_limit(tmp_path: Path) -> None:
    result, _ = run(tmp_path, "hoard = []\nwhile True:\n    hoard.append(bytearray(64 << 20))\n")
    assert result.reason.startswith("memory limit reached"), result


@needs_bwrap
def test_endless_loop_is_killed_at_the_wall_time_limit(tmp_path: Path) -> None:
    limits = Limits(cpu_seconds=60, memory_bytes=1 << 30, processes=32, file_bytes=1 << 20, wall_seconds=1.5)
    # The loop runs in a grandchild that ignores SIGTERM: the kill must take the whole tree.
    result, _ = run(
        tmp_path,
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n    while True: pass\nos.wait()\n",
        limits,
    )
    assert result.reason.startswith("timed out"), result
    assert result.wall_seconds < 10


@needs_bwrap
def test_cpu_time_limit(tmp_path: Path) -> None:
    limits = Limits(cpu_seconds=1, memory_bytes=1 << 30, processes=32, file_bytes=1 << 20, wall_seconds=30)
    result, _ = run(tmp_path, "while True:\n    pass\n", limits)
    assert result.reason.startswith("CPU-time limit reached"), result


@needs_bwrap
def test_huge_file_hits_the_file_size_limit(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path, "with open('/out/big', 'wb') as f:\n    while True:\n        f.write(bytes(1 << 20))\n"
    )
    assert result.reason.startswith("file too large"), result
