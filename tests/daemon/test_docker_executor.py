"""The docker executor's container definition, exit statuses and image choice (no engine needed), and
forged's one-line refusal when --executor docker finds no engine."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from forge.v1 import hardware_pb2
from harness import Forged, forge_env

from forgectl import docker_probe
from forged.config import ConfigError, parse_size
from forged.executors.base import ExecutorError, RunRequest
from forged.executors.docker import (
    RUNNER_PROTOCOL,
    RUNNER_UID,
    DockerExecutor,
    container_config,
    container_ids,
    exit_status,
    hand_over,
    spec_mounts,
)
from forged.hardware.nvml import GpuInfo
from runner_image import RUNNER_PROTOCOL_VERSION


def _request(tmp_path: Path, spec: dict[str, object], gpus: tuple[int, ...] | None = None) -> RunRequest:
    workspace = tmp_path / "jobs" / "j-1"
    (workspace / "output").mkdir(parents=True)
    spec_path = workspace / "runner_spec.json"
    spec_path.write_text(json.dumps(spec))
    return RunRequest("j-1", workspace, spec_path, gpu_indices=gpus)


def _gpu(index: int, capability: str) -> GpuInfo:
    return GpuInfo(index, "card", f"GPU-{index}-uuid", capability, "", 80 << 30, 80 << 30, 0, False)


def test_the_container_sees_only_the_workspace_and_what_the_spec_names_read_only(tmp_path: Path) -> None:
    model = tmp_path / "models" / "my-llama"
    hub_repo = tmp_path / "hf" / "hub" / "models--org--name"
    snapshot = hub_repo / "snapshots" / "abc123"
    for folder in (model, snapshot):
        folder.mkdir(parents=True)
    request = _request(
        tmp_path,
        {
            "model": {"kind": "path", "path": str(model)},
            "adapter_dir": str(snapshot),
            "train_file": str(tmp_path / "jobs" / "j-1" / "data.jsonl"),  # inside the workspace
            "output_dir": str(tmp_path / "jobs" / "j-1" / "output"),
            "note": "/not/a/path/that/exists",
        },
    )
    environ = {"FORGE_FAULTS": "[]", "FORGE_TOKEN": "secret", "GEMINI_API_KEY": "k", "PATH": "/usr/bin"}
    config = container_config(request, "forge:cpu", [], 8 << 30, 512, environ, "1000:1000", "vm:/state")

    workspace = str(request.workspace)
    assert config["volumes"] == {
        workspace: {"bind": workspace, "mode": "rw"},
        str(model): {"bind": str(model), "mode": "ro"},
        # A hub snapshot is symlinks into the repo's blobs/: the repo folder is what makes it readable.
        str(hub_repo): {"bind": str(hub_repo), "mode": "ro"},
    }
    assert config["network_mode"] == "none"
    assert config["read_only"] is True and set(config["tmpfs"]) == {"/tmp"}
    assert config["privileged"] is False and config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges"]
    assert (config["mem_limit"], config["memswap_limit"], config["pids_limit"]) == (8 << 30, 8 << 30, 512)
    assert config["labels"] == {
        "forge.job": "j-1",
        "forge.entry": "runner_image run",
        "forge.managed-by": "forged",
        "forge.host": "vm:/state",
    }
    assert config["user"] == "1000:1000"
    assert config["entrypoint"] == ["python", "-m", "runner_image", "run"]
    assert config["command"] == ["--spec", str(request.spec_path)]
    env = config["environment"]
    assert env["FORGE_FAULTS"] == "[]" and env["HF_HUB_OFFLINE"] == "1"
    assert not {"FORGE_TOKEN", "GEMINI_API_KEY", "PATH"} & set(env)
    assert config["device_requests"] == []


def test_a_gpu_job_requests_exactly_its_gpus_by_uuid_and_gets_the_oldest_cards_image(tmp_path: Path) -> None:
    gpus = [_gpu(0, "8.6"), _gpu(1, "9.0"), _gpu(2, "9.0")]
    executor = DockerExecutor(client=None, gpus=lambda: gpus, memory_bytes=1 << 30)  # type: ignore[arg-type]

    choice, ids = executor.image_for((1, 2))
    assert (choice.arch, ids) == ("hopper", ["GPU-1-uuid", "GPU-2-uuid"])
    # Ampere kernels run on the Hopper card too; Hopper's would not run on the Ampere one.
    assert executor.image_for((2, 0))[0].arch == "ampere"
    assert executor.image_for(None)[0].arch == "cpu" and executor.image_for(())[1] == []
    with pytest.raises(ExecutorError, match="not all known to NVML"):
        executor.image_for((7,))

    request = _request(tmp_path, {"model": {"kind": "tiny"}}, gpus=(1, 2))
    (device,) = container_config(request, "forge:hopper", ids, 1 << 30, 64, {}, "0:0")["device_requests"]
    assert (device["Driver"], device["DeviceIDs"], device["Capabilities"]) == (
        "nvidia",
        ["GPU-1-uuid", "GPU-2-uuid"],
        [["gpu"]],
    )


def test_a_container_end_reads_like_a_process_end() -> None:
    assert exit_status({"ExitCode": 0}) == 0
    assert exit_status({"ExitCode": 75}) == 75  # checkpointed and stopped
    assert exit_status({"ExitCode": 2}) == 2
    assert exit_status({"ExitCode": 137}) == -signal.SIGKILL
    assert exit_status({"ExitCode": 143}) == -signal.SIGTERM
    # The kernel's OOM killer inside the memory limit: SIGKILL, which self-healing reads as out of memory.
    assert exit_status({"ExitCode": 1, "OOMKilled": True}) == -signal.SIGKILL


def test_forged_and_the_runner_image_speak_the_same_protocol() -> None:
    assert str(RUNNER_PROTOCOL_VERSION) == RUNNER_PROTOCOL


def test_an_unreadable_spec_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="cannot read the runner spec"):
        spec_mounts(tmp_path / "missing.json", tmp_path)


def test_memory_sizes_read_as_docker_writes_them() -> None:
    assert parse_size("16g") == 16 << 30 and parse_size("512m") == 512 << 20 and parse_size("2GiB") == 2 << 30
    assert parse_size("1073741824") == 1 << 30
    for bad in ("lots", "0", "-1g", "g"):
        with pytest.raises(ConfigError, match="is not a size"):
            parse_size(bad)


def test_forged_without_an_engine_says_so_in_one_line(tmp_path: Path) -> None:
    env = forge_env(DOCKER_HOST=f"unix://{tmp_path / 'no-dockerd.sock'}")
    out = subprocess.run(
        [sys.executable, "-m", "forged", "--state-dir", str(tmp_path / "state"), "--executor", "docker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("forged: no Docker engine answers at unix://") and "--executor local" in line
    bad = subprocess.run(
        [sys.executable, "-m", "forged", "--state-dir", str(tmp_path / "s2"), "--docker-memory", "lots"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "forged: 'lots' is not a size: write e.g. 16g, 512m or a number of bytes"
    )


def test_docker_probe_needs_the_docker_executor(forged: Forged) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", forged.address, "docker", "probe"],
        env=forge_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: forged runs jobs as local processes: start it with --executor docker to use runner images"
    )


def test_a_gpu_probe_reads_as_the_gpu_torch_saw() -> None:
    report = {
        "ok": True,
        "reason": "",
        "notes": [],
        "image_arch": "hopper",
        "python": "3.12.3",
        "torch": "2.9.1+cu126",
        "torch_cuda": "12.6",
        "cuda_available": True,
        "device_name": "NVIDIA H200",
        "compute_capability": "9.0",
        "gpu_memory_total_bytes": 150 << 30,
        "gpu_memory_free_bytes": 149 << 30,
        "bf16_supported": True,
        "train_step": {"ok": True, "device": "cuda", "precision": "bf16"},
        "bitsandbytes": {"status": "ok"},
        "unsloth": {"status": "missing"},
        "flash_attn": {"status": "missing"},
    }
    found = hardware_pb2.ProbeImageResponse(
        image="forge:hopper", arch="hopper", ok=True, report_json=json.dumps(report)
    )
    assert docker_probe.lines(found) == [
        "forge:hopper: can train on this machine",
        "torch 2.9.1+cu126 (CUDA build 12.6), Python 3.12.3",
        "GPU: NVIDIA H200, compute capability 9.0, 149.0 of 150.0 GiB free, bf16",
        "LoRA step on cuda in bf16: ok",
        "bitsandbytes ok, unsloth missing, flash-attn missing",
    ]
    assert docker_probe.as_json(found)["report"]["device_name"] == "NVIDIA H200"


@pytest.mark.skipif(os.getuid() != 0, reason="giving files away needs root, which is when forged does it")
def test_a_root_forged_hands_the_workspace_to_the_image_user_but_not_the_shared_data(tmp_path: Path) -> None:
    assert container_ids(0, 0) == (RUNNER_UID, RUNNER_UID)
    assert container_ids(1000, 1000) == (1000, 1000), "an unprivileged forged's containers run as itself"
    blob = tmp_path / "blobs" / "ab12"
    blob.parent.mkdir()
    blob.write_text('{"text": "shared"}\n')
    blob.chmod(0o600)  # as the blob store writes it
    workspace = tmp_path / "jobs" / "j-1"
    (workspace / "data").mkdir(parents=True)
    (workspace / "checkpoints" / "step-2").mkdir(parents=True)
    (workspace / "checkpoints" / "step-2" / "COMPLETE").write_text("")
    os.link(blob, workspace / "data" / "train.jsonl")

    hand_over(workspace, RUNNER_UID, RUNNER_UID)

    mine = [workspace, workspace / "data", workspace / "checkpoints" / "step-2" / "COMPLETE"]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in mine} == {(RUNNER_UID, RUNNER_UID)}
    # The blob stays root's, unwritable by the container, and becomes readable so the runner can train on it.
    assert (blob.stat().st_uid, stat.S_IMODE(blob.stat().st_mode)) == (0, 0o644)
