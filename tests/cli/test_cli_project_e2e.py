"""The PRD's five-command path as a new user runs it, offline and with no key: real forgectl processes in a
project directory, a real forged, the real runner, export and llama.cpp; Ollama is absent."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from forge.v1 import jobs_pb2, projects_pb2, projects_pb2_grpc
from harness import EXAMPLE_CSV, Forged, forge_env

from forgectl.project import parse_config

GOAL = "Answer our customers' questions"
# Training, merging, converting and the parity gate are each a torch process: minutes on a loaded 2-core box.
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    # Offline with no key: no brain key in the environment, and nothing listening where Ollama would be.
    env = forge_env(OLLAMA_HOST=f"127.0.0.1:{_free_port()}")
    for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        env.pop(key, None)
    return env


def forgectl(cwd: Path, daemon: Forged, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", daemon.address, *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=800,
    )  # fmt: skip


def last_json(stdout: str) -> dict:  # type: ignore[type-arg]
    return json.loads(stdout.strip().splitlines()[-1])


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_init_leaves_no_project_behind_and_can_be_run_again(forged: Forged, tmp_path: Path) -> None:
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "data").write_text("a file where init wants its data folder")
    failed = forgectl(tmp_path, forged, "init", "blocked")
    assert failed.returncode != 0 and "cannot write" in one_error_line(failed)
    assert sorted(p.name for p in (tmp_path / "blocked").iterdir()) == ["data"]

    long_name = "x" * 250  # more than forged takes for a project name: registration fails after the writes
    refused = forgectl(tmp_path, forged, "init", long_name)
    assert refused.returncode != 0 and "at most" in one_error_line(refused)
    assert not (tmp_path / long_name).exists()

    (tmp_path / "blocked" / "data").unlink()
    made = forgectl(tmp_path, forged, "init", "blocked", "--json")
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(forged.state_dir / "forge.db") as db:
        assert db.execute("SELECT name FROM projects").fetchall() == [("blocked",)]


def test_init_prepare_plan_train_inference_and_status(forged: Forged, tmp_path: Path) -> None:
    made = forgectl(tmp_path, forged, "init", "demo", "--json")
    assert made.returncode == 0, made.stderr
    created = last_json(made.stdout)
    demo = tmp_path / "demo"
    project_file = demo / ".forge" / "project.json"
    assert json.loads(project_file.read_text())["id"] == created["id"]
    assert (demo / "data").is_dir() and parse_config(
        (demo / "forge.yaml").read_text()
    ).brain.kind == "offline"
    known = projects_pb2_grpc.ProjectsStub(forged.channel).Get(
        projects_pb2.GetProjectRequest(id=created["id"])
    )
    assert known.name == "demo"
    # The offline brain needs no key, and forged confirms it answers.
    assert created["key"] is None and created["check"]["ok"] is True, created["check"]

    before = project_file.read_bytes()
    again = forgectl(tmp_path, forged, "init", "demo")
    assert again.returncode == 2
    assert "already a forge project" in one_error_line(again)
    assert project_file.read_bytes() == before, "an existing project is left exactly as it was"

    prepared = forgectl(demo, forged, "prepare", str(EXAMPLE_CSV), GOAL)
    assert prepared.returncode == 0, prepared.stderr
    assert "nothing left this machine" in prepared.stdout and "offline brain" in prepared.stdout
    record = json.loads((demo / ".forge" / "prepared.json").read_text())
    train_file = demo / "data" / "processed_train.jsonl"
    assert len(train_file.read_text().splitlines()) == int(record["stats"]["train_examples"]) > 0
    assert sha256(train_file) == record["train_data"], (
        "the local file is the daemon's artifact, byte for byte"
    )

    planned = forgectl(demo, forged, "plan", GOAL, "--model", "tiny", "--epochs", "1", "--batch-size", "2")
    assert planned.returncode == 0, planned.stderr
    assert "offline brain" in planned.stdout
    text = (demo / "forge.yaml").read_text()
    config = parse_config(text)
    assert (config.model, config.training.epochs, config.training.micro_batch_size) == ("tiny", 1, 2)
    assert "# yours (--epochs)" in text and "# yours (--batch-size)" in text
    assert "# effective batch" in text, "a value the planner chose carries its reason"
    # A hand edit: train must use it.
    (demo / "forge.yaml").write_text(text.replace("  max_steps: 0\n", "  max_steps: 2\n"))

    trained = forgectl(demo, forged, "train", "--json")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr
    assert "Traceback" not in trained.stderr
    job = forged.get(last_json(trained.stdout)["id"])
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert job.spec.project == created["id"]
    t = job.spec.train
    assert (t.model, t.epochs, t.micro_batch_size, t.max_steps) == ("tiny", 1, 2, 2)
    assert t.train_data == record["train_data"], "train reused the prepared upload"
    assert job.metrics.steps == 2 and "gguf" in job.artifacts

    answer = forgectl(demo, forged, "inference", "Where is my order?", "--max-tokens", "4")
    assert answer.returncode == 0, answer.stderr
    assert "answering with llama.cpp" in answer.stderr

    status = forgectl(demo / "data", forged, "status", "--json")  # from a subdirectory, as git would
    assert status.returncode == 0, status.stderr
    health = last_json(status.stdout)["project"]
    assert health["id"] == created["id"] and health["known_to_daemon"] is True
    assert health["data"]["files"]["data/processed_train.jsonl"] == int(record["stats"]["train_examples"])
    assert (health["plan"]["model"], health["plan"]["max_steps"]) == ("tiny", 2)
    assert [j["id"] for j in health["jobs"]] == [job.id]
    assert health["jobs"][0]["artifacts"]["gguf"] == job.artifacts["gguf"]
    shown = forgectl(demo, forged, "status")
    assert shown.returncode == 0 and job.id in shown.stdout and "246 rows" in shown.stdout


def test_prepare_and_plan_outside_a_project_and_a_replan_keeps_hand_edits(
    forged: Forged, tmp_path: Path
) -> None:
    prepared = forgectl(tmp_path, forged, "prepare", str(EXAMPLE_CSV), GOAL)
    assert prepared.returncode == 0, prepared.stderr
    assert "not in a forge project" in prepared.stderr
    assert (tmp_path / "data" / "processed_val.jsonl").is_file()
    assert not (tmp_path / ".forge" / "project.json").exists(), "prepare never makes a project by itself"
    planned = forgectl(tmp_path, forged, "plan", GOAL, "--model", "tiny", "--json")
    assert planned.returncode == 0, planned.stderr
    assert parse_config((tmp_path / "forge.yaml").read_text()).model == "tiny"
    assert [d["field"] for d in last_json(planned.stdout)["decisions"] if d["yours"]] == ["model"]

    forge_yaml = tmp_path / "forge.yaml"
    forge_yaml.write_text(forge_yaml.read_text().replace("  lora_rank: 16\n", "  lora_rank: 8\n"))
    replanned = forgectl(tmp_path, forged, "plan", GOAL, "--epochs", "2", "--json")
    assert replanned.returncode == 0, replanned.stderr
    yours = sorted(d["field"] for d in last_json(replanned.stdout)["decisions"] if d["yours"])
    assert yours == ["epochs", "lora_rank", "model"], "a hand edit and an earlier --model stay the user's"
    text = forge_yaml.read_text()
    config = parse_config(text)
    assert (config.training.lora_rank, config.training.epochs) == (8, 2)
    assert "# yours (kept from forge.yaml)\n  lora_rank: 8" in text

    # Edited prepared data is uploaded as edited; outside a project the job belongs to none.
    train_file = tmp_path / "data" / "processed_train.jsonl"
    train_file.write_text("".join(train_file.read_text().splitlines(keepends=True)[:-1]))
    submitted = forgectl(tmp_path, forged, "train", "--detach", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert "data/processed_train.jsonl changed since prepare: uploading your copy" in submitted.stderr
    job_id = last_json(submitted.stdout)["id"]
    assert forgectl(tmp_path, forged, "cancel", job_id).returncode == 0
    spec = forged.get(job_id).spec
    assert spec.train.train_data == sha256(train_file) and spec.project == ""
    assert (spec.train.lora_rank, spec.train.epochs) == (8, 2)


@pytest.mark.parametrize("pattern", ["alpaca/alpaca_5000.json", "dolly15k_sample/*.jsonl"])
def test_real_datasets_prepare_and_plan_in_a_project(
    forged: Forged, tmp_path: Path, pattern: str, realdata: Path
) -> None:
    source = sorted(realdata.glob(pattern))[0]
    assert forgectl(tmp_path, forged, "init", "real").returncode == 0
    project = tmp_path / "real"
    prepared = forgectl(project, forged, "prepare", str(source), "Follow instructions", "--json")
    assert prepared.returncode == 0, prepared.stderr
    stats = last_json(prepared.stdout)["stats"]
    assert stats["train_examples"] > 0
    assert stats["rows_in"] == stats["train_examples"] + stats["val_examples"] + stats["dropped"]
    train_rows = (project / "data" / "processed_train.jsonl").read_text().splitlines()
    assert len(train_rows) == stats["train_examples"]
    planned = forgectl(project, forged, "plan", "Follow instructions")
    assert planned.returncode == 0, planned.stderr
    config = parse_config((project / "forge.yaml").read_text())
    assert config.model and config.training.max_seq_len and config.training.max_seq_len >= 128
    if "dolly" not in pattern:
        return
    # And it trains: the offline plan on a CPU box is the tiny pipeline check; one step, no export, to keep
    # the suite short (the five-command test above trains and exports the bundled example).
    text = (project / "forge.yaml").read_text()
    edited = text.replace("  max_steps: 0\n", "  max_steps: 1\n").replace(
        "  export: true\n", "  export: false\n"
    )
    assert edited != text
    (project / "forge.yaml").write_text(edited)
    trained = forgectl(project, forged, "train", "--json")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr
    job = forged.get(last_json(trained.stdout)["id"])
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.metrics.steps == 1
    assert job.spec.train.model == "tiny" and job.spec.train.train_data == sha256(
        project / "data" / "processed_train.jsonl"
    )


def test_ignite_takes_spiders_schema_as_a_side_file(forged: Forged, tmp_path: Path, realdata: Path) -> None:
    spider = realdata / "spider_dev"
    done = forgectl(
        tmp_path, forged, "ignite", str(spider / "dev.json"), "Turn questions into SQL",
        "--with", str(spider / "tables.json"), "--dry-run", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = last_json(done.stdout)["stats"]
    assert stats["layout"] == "question/query+schema" and stats["dropped"] == 0
