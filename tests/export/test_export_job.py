"""The export as users run it: `forgectl ignite` (which exports by default) and `forgectl export`, through a
real forged, real runner processes, the real converter and llama.cpp; Ollama is a loopback fake or absent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gguf import GGUFReader
from harness import EXAMPLE_CSV, Forged, forge_env, running_forged
from ollama_fake import FakeOllama

Exported = tuple[Forged, subprocess.CompletedProcess[str]]
# Training, merging, converting and the parity gate are each a torch process: minutes on a loaded 2-core box.
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forgectl(daemon: Forged, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", daemon.address, *args],
        env=forge_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _last_json(stdout: str) -> dict:  # type: ignore[type-arg]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ollama_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, ollama_port: int) -> Iterator[Exported]:
    """A forged whose Ollama address has nothing listening yet, and a tiny job ignite trained and exported."""
    state = tmp_path_factory.mktemp("export") / "state"
    env = forge_env(OLLAMA_HOST=f"127.0.0.1:{ollama_port}")
    with running_forged(state, env=env) as daemon:
        done = _forgectl(daemon, "ignite", str(EXAMPLE_CSV), "Answer our customers' questions",
                         "--model", "tiny", "--max-steps", "10")  # fmt: skip
        yield daemon, done


def test_ignite_exports_by_default_and_says_how_to_register_when_ollama_is_down(exported: Exported) -> None:
    daemon, done = exported
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    job_id = next(line.split()[2] for line in done.stdout.splitlines() if line.startswith("following job"))
    job = daemon.get(job_id)
    assert {"adapter", "merged", "gguf"} <= set(job.artifacts)
    assert "ollama" not in job.artifacts
    assert "parity gate PASSED" in done.stdout
    later = f"forgectl export {job_id} --register-only --name answer-our-customers-questions"
    assert later in done.stdout, "Ollama down: the export succeeds and says exactly how to register later"
    reader = GGUFReader(job.artifacts["gguf"])
    assert reader.fields["general.architecture"].contents() == "llama"
    assert (Path(job.artifacts["merged"]) / "model.safetensors").is_file()


def test_export_json_names_merged_and_gguf_then_register_only(exported: Exported, ollama_port: int) -> None:
    daemon, done = exported
    assert done.returncode == 0, done.stderr
    # The gate already ran on this model's f16 export above; skipping it here keeps the test fast.
    again = _forgectl(daemon, "export", "--quant", "q8_0", "--no-ollama", "--skip-verify", "--json")
    assert again.returncode == 0, again.stderr
    job = _last_json(again.stdout)
    assert job["state"] == "succeeded"
    assert Path(job["artifacts"]["merged"]).is_dir()
    assert job["artifacts"]["gguf"].endswith("-q8_0.gguf") and Path(job["artifacts"]["gguf"]).is_file()

    with FakeOllama(port=ollama_port) as fake:
        registered = _forgectl(daemon, "export", job["id"], "--register-only", "--name", "support-bot",
                               "--json")  # fmt: skip
        assert registered.returncode == 0, registered.stderr
        result = _last_json(registered.stdout)
        assert result["artifacts"]["ollama"] == "support-bot:latest"
        assert result["artifacts"]["gguf"] == job["artifacts"]["gguf"]
        create = fake.state.creates[-1]
        assert create["files"] == {Path(job["artifacts"]["gguf"]).name: next(iter(fake.state.blobs))}
        assert create["parameters"]["stop"] == ["<|im_end|>"]
        assert "<|im_start|>" in create["template"]
        assert create["system"].startswith("You are a helpful AI assistant")
        assert "support-bot:latest" in fake.state.models


def test_bad_export_requests_are_one_line_and_exit_2(exported: Exported) -> None:
    daemon, _done = exported
    missing = _forgectl(daemon, "export", "j-nosuchjob")
    assert missing.returncode == 2 and "no job" in missing.stderr
    bad = _forgectl(daemon, "export", "--name", "not a name!")
    assert bad.returncode == 2 and "not a valid Ollama model name" in bad.stderr
    assert len([line for line in bad.stderr.splitlines() if line.strip()]) == 1


def test_inference_answers_from_the_gguf_with_no_ollama(exported: Exported) -> None:
    daemon, done = exported
    assert done.returncode == 0, done.stderr
    job_id = next(line.split()[2] for line in done.stdout.splitlines() if line.startswith("following job"))
    # The job has no Ollama model and nothing listens at OLLAMA_HOST: llama.cpp on the GGUF answers.
    answer = _forgectl(daemon, "inference", "Where is my order?", "--job", job_id, "--max-tokens", "8")
    assert answer.returncode == 0, answer.stderr
    assert "answering with llama.cpp" in answer.stderr
    assert "Traceback" not in answer.stderr
    # A random-weight model says nothing meaningful; that it streamed some text is what can be checked.
    assert answer.stdout.strip()
