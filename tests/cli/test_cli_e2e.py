"""forgectl as a user runs it: a real process talking to a real forged over its socket."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from forge.v1 import jobs_pb2
from harness import EXAMPLE_CSV, Forged, forge_env


def forgectl(
    *args: str, daemon: Forged | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    prefix = ["--daemon", daemon.address] if daemon is not None else []
    return subprocess.run(
        [sys.executable, "-m", "forgectl", *prefix, *args],
        env=env or forge_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:  # type: ignore[type-arg]
    return json.loads(stdout.strip().splitlines()[-1])


def test_ignite_trains_the_tiny_model_and_reports_the_job_as_json(forged: Forged) -> None:
    done = forgectl(
        "ignite", str(EXAMPLE_CSV), "Answer our customers' questions", "--model", "tiny",
        "--max-steps", "20", "--no-export", "--json", daemon=forged,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    job = last_json(done.stdout)
    assert job["state"] == "succeeded"
    metrics = job["metrics"]
    assert metrics["steps"] == 20
    assert metrics["final_loss"] < metrics["first_loss"]
    assert metrics["final_val_loss"] < metrics["first_val_loss"]
    adapter = Path(job["artifacts"]["adapter"])
    assert (adapter / "adapter_config.json").is_file()
    # The same job, as `jobs --json` lists it.
    listed = [json.loads(line) for line in forgectl("jobs", "--json", daemon=forged).stdout.splitlines()]
    assert [j["id"] for j in listed] == [job["id"]]


def _bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    """Each file a user might really hand us, and a phrase the one-line error must contain."""
    cases = {
        "missing": (root / "nope.csv", "does not exist"),
        "empty": (root / "empty.csv", "is empty"),
        "binary": (root / "photo.csv", "binary"),
        "no known encoding": (root / "noise.csv", "encoding"),
        "header only": (root / "header.csv", "no rows"),
        "unknown layout": (root / "layout.csv", "column"),
        "directory": (root / "adir", "directory"),
    }
    cases["empty"][0].write_bytes(b"")
    cases["binary"][0].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    # Latin-1 and UTF-16 are read now; bytes that no code page makes text of are still refused.
    cases["no known encoding"][0].write_bytes(bytes(range(1, 256)) * 40)
    cases["header only"][0].write_text("question,answer\n")
    cases["unknown layout"][0].write_text("foo,bar\n1,2\n3,4\n")
    cases["directory"][0].mkdir()
    return cases


def test_bad_inputs_give_one_line_exit_2_and_leave_the_daemon_healthy(forged: Forged, tmp_path: Path) -> None:
    for name, (path, phrase) in _bad_inputs(tmp_path).items():
        done = forgectl("ignite", str(path), "a support bot", "--model", "tiny", daemon=forged)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (name, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, done.stderr)
        assert phrase in lines[0], (name, lines[0])
        assert forged.healthy(), name
    # Nothing half-submitted: no job exists after all those failures.
    assert forgectl("jobs", "--json", daemon=forged).stdout.strip() == ""


def test_dry_run_plans_and_submits_nothing(forged: Forged) -> None:
    done = forgectl("ignite", str(EXAMPLE_CSV), "a support bot", "--model", "tiny", "--dry-run", "--json",
                    daemon=forged)  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = last_json(done.stdout)
    assert plan["plan"]["model"] == "tiny"
    assert plan["stats"]["train_examples"] > plan["stats"]["val_examples"] > 0
    assert forgectl("jobs", "--json", daemon=forged).stdout.strip() == ""


def test_detach_watch_ctrl_c_logs_and_cancel(forged: Forged) -> None:
    done = forgectl("ignite", str(EXAMPLE_CSV), "a support bot", "--model", "tiny", "--max-steps", "5000",
                    "--detach", "--json", daemon=forged)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = last_json(done.stdout)["id"]
    forged.wait_until(job_id, lambda j: j.metrics.steps >= 1)

    watcher = subprocess.Popen(
        [sys.executable, "-m", "forgectl", "--daemon", forged.address, "watch", job_id],
        env=forge_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A user at a terminal: Ctrl-C's default disposition, even when this test runs where SIGINT is
        # ignored (a background job of a non-interactive shell, whose children inherit that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # watch is following: its handler is in place
    assert first.startswith(f"following job {job_id}"), first
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    out = first + out
    assert watcher.returncode == 0, err
    assert f"forgectl watch {job_id}" in out + err, "Ctrl-C says how to re-attach"
    assert "Traceback" not in err
    assert forged.get(job_id).state == jobs_pb2.JOB_STATE_RUNNING, "detaching never cancels the job"

    logs = forgectl("logs", job_id, daemon=forged)
    assert logs.returncode == 0 and "validation loss" in logs.stdout

    cancelled = forgectl("cancel", job_id, daemon=forged)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    watched = forgectl("watch", job_id, "--json", daemon=forged)
    assert watched.returncode == 1, "a job that did not succeed is exit 1"
    assert last_json(watched.stdout)["state"] == "cancelled"

    unknown = forgectl("watch", "j-nosuchjob", daemon=forged)
    assert unknown.returncode == 2 and "no job" in unknown.stderr


def test_status_and_gpus_answer_on_a_machine_without_a_gpu(forged: Forged) -> None:
    gpus = forgectl("gpus", daemon=forged)
    assert gpus.returncode == 0
    assert "no NVIDIA GPU found" in gpus.stdout
    status = forgectl("status", "--json", daemon=forged)
    assert status.returncode == 0, status.stderr
    report = last_json(status.stdout)
    assert report["queue"] == {"queued": 0, "running": 0}
    assert report["address"] == forged.address


def test_shared_box_needs_a_token_and_reads_it_from_the_environment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = subprocess.run(
        [sys.executable, "-m", "forged", "token", "create", "alice", "--state-dir", str(state)],
        env=forge_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = made.stdout.strip().splitlines()[-1]
    d = Forged(state, "--auth", "token").start()
    try:
        config = tmp_path / "config"  # no token file there
        anonymous = forgectl("jobs", daemon=d, env=forge_env(XDG_CONFIG_HOME=str(config)))
        assert anonymous.returncode == 2
        assert "forged token create" in anonymous.stderr
        with_token = forgectl("jobs", daemon=d, env=forge_env(XDG_CONFIG_HOME=str(config), FORGE_TOKEN=token))
        assert with_token.returncode == 0, with_token.stderr
        (config / "forge").mkdir(parents=True)
        (config / "forge" / "token").write_text(token + "\n")
        from_file = forgectl("jobs", daemon=d, env=forge_env(XDG_CONFIG_HOME=str(config)))
        assert from_file.returncode == 0, from_file.stderr
    finally:
        d.cleanup()


def test_no_daemon_running_starts_the_per_user_one_in_the_background(tmp_path: Path) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="fr-"))  # short: unix socket paths max out at 107 bytes
    env = forge_env(XDG_DATA_HOME=str(tmp_path / "data"), XDG_RUNTIME_DIR=str(runtime))
    try:
        first = forgectl("jobs", env=env)
        assert first.returncode == 0, first.stderr
        assert "started forged in the background" in first.stderr
        assert (runtime / "forge" / "forged.sock").exists()
        second = forgectl("jobs", env=env)
        assert second.returncode == 0 and second.stderr == "", "the daemon is reused, not started twice"
    finally:
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                if "forged" in " ".join(proc.info["cmdline"] or []) and (
                    (proc.info["environ"] or {}).get("XDG_RUNTIME_DIR") == str(runtime)
                ):
                    proc.terminate()
                    proc.wait(60)
            except psutil.Error:
                pass
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.parametrize("name", ["forge", "forgectl"])
def test_both_command_names_are_installed(name: str) -> None:
    exe = Path(sys.executable).parent / name
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=forge_env())
    assert done.returncode == 0 and "ignite" in done.stdout
