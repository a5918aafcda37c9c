"""Registering a GGUF with Ollama over its real HTTP API (a loopback fake stands in for the server)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from gguf import GGUFWriter
from ollama_fake import FakeOllama

from forged.export.ollama import (
    ChatParams,
    OllamaRefused,
    OllamaUnavailable,
    check_name,
    host_url,
    register,
)

PARAMS = ChatParams(
    template="{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}",
    stop=["<|im_end|>", "<|endoftext|>"],
    system="You are a support bot.",
)


def _gguf(path: Path) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_register_pushes_the_blob_creates_the_model_and_lists_it(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path / "model-f16.gguf")
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    messages: list[str] = []
    with FakeOllama() as fake:
        listed = register(gguf, "support-bot", PARAMS, host=fake.url, progress=messages.append)

        assert listed == "support-bot:latest"
        assert fake.state.blobs[digest] == gguf.read_bytes(), "the blob is the file, under its own digest"
        create = fake.state.creates[-1]
        assert create["model"] == "support-bot"
        assert create["files"] == {"model-f16.gguf": digest}
        assert create["template"] == PARAMS.template
        assert create["system"] == "You are a support bot."
        assert create["parameters"] == {"stop": ["<|im_end|>", "<|endoftext|>"]}
        assert not fake.state.rejected
        assert any("success" in m for m in messages)

        # Registering again (say, under a new name) finds the blob with HEAD and does not upload it twice.
        assert register(gguf, "support-bot:v2", PARAMS, host=fake.url) == "support-bot:v2"
        assert fake.state.blob_posts == 1
        assert set(fake.state.models) == {"support-bot:latest", "support-bot:v2"}


def test_the_fake_rejects_bytes_that_do_not_match_their_digest(tmp_path: Path) -> None:
    # The fake's digest check is what makes the round trip above mean something; prove it bites.
    with FakeOllama() as fake:
        wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
        response = httpx.post(f"{fake.url}/api/blobs/{wrong}", content=b"GGUF these bytes")
        assert response.status_code == 400 and "digest" in response.json()["error"]
        assert not fake.state.blobs


def test_a_create_ollama_rejects_is_a_refusal_not_an_outage(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with FakeOllama() as fake, pytest.raises(OllamaRefused, match="not a GGUF"):
        register(not_gguf, "broken", PARAMS, host=fake.url)


def test_no_ollama_running_is_reported_as_unavailable(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path / "model.gguf")
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(OllamaUnavailable, match="not reachable"):
        register(gguf, "support-bot", PARAMS, host=url)


def test_host_and_name_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert host_url() == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5")
    assert host_url() == "http://10.0.0.5:11434"
    assert host_url("0.0.0.0") == "http://127.0.0.1:11434"
    assert host_url("gpu-box:8080") == "http://gpu-box:8080"
    assert host_url("https://ollama.example/") == "https://ollama.example:443"
    assert check_name("team/support-bot:v2") == "team/support-bot:v2"
    with pytest.raises(ValueError, match="not a valid Ollama model name"):
        check_name("support bot!")
