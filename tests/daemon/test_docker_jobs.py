"""Jobs in containers through a real forged and a real Docker engine (skipped, saying why, without one).

The runner image is the CPU one, built from runner_image/docker/Dockerfile offline by tests/docker_support.py;
`.ci/run` starts the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from docker_support import BUILD_TIMEOUT_S, base_image, engine_or_skip, offline_cpu_image, wheelhouse_dir
from forge.v1 import jobs_pb2 as S
from harness import EXAMPLE_CSV, TERMINAL, Forged, forge_env, running_forged

from forged.executors.docker import RUNNER_UID

GiB = 1 << 30
# Whichever test runs first may build the image (the Debian base, the wheels and the build): minutes, once.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Any, str]]:
    client = engine_or_skip()
    yield client, offline_cpu_image(client)
    client.close()


def _args(repository: str, *extra: str) -> tuple[str, ...]:
    return ("--executor", "docker", "--docker-repository", repository, *extra)


def docker_forged(state: Path, repository: str, *extra: str, **kw: Any) -> AbstractContextManager[Forged]:
    return running_forged(state, *_args(repository, *extra), **kw)


def containers_of(client: Any, job_id: str) -> list[Any]:
    import docker

    while True:
        try:
            return client.containers.list(all=True, filters={"label": f"forge.job={job_id}"})
        except docker.errors.NotFound:
            continue  # removed between the listing and its inspection: list again


def wait_for_container(forged: Forged, client: Any, job_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = containers_of(client, job_id)
        if found:
            return found[0]
        job = forged.get(job_id)
        assert job.state not in TERMINAL, f"the job ended before its container was seen: {job.error}"
        time.sleep(0.1)
    raise TimeoutError(f"no container for {job_id}")


def test_a_job_trains_in_a_locked_down_container_and_leaves_nothing_behind(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    client, repository = engine
    with docker_forged(
        tmp_path / "state", repository, "--docker-memory", "6g", "--docker-pids", "1024"
    ) as forged:
        job = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=4, checkpoint_every=2))
        container = wait_for_container(forged, client, job.id)
        host = container.attrs["HostConfig"]
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL)

    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    workspace = tmp_path / "state" / "jobs" / job.id
    assert container.attrs["Config"]["Image"] == f"{repository}:cpu"
    assert host["Binds"] == [f"{workspace}:{workspace}:rw"]  # the tiny model lives in the image
    assert (host["NetworkMode"], host["ReadonlyRootfs"], host["Privileged"]) == ("none", True, False)
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (6 * GiB, 6 * GiB, 1024)
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    # Never root in the container: forged's own uid, or the image's `forge` user when forged is root.
    uid, gid = (RUNNER_UID, RUNNER_UID) if os.getuid() == 0 else (os.getuid(), os.getgid())
    assert container.attrs["Config"]["User"] == f"{uid}:{gid}"
    # The adapter the container wrote is on the host, in the job's workspace, which that user owns.
    adapter = Path(done.artifacts["adapter"])
    assert adapter.is_relative_to(workspace) and (adapter / "adapter_config.json").is_file()
    assert adapter.stat().st_uid == workspace.stat().st_uid == uid
    assert containers_of(client, job.id) == []


def test_forged_killed_mid_training_reattaches_to_the_container_and_the_job_finishes_once(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    client, repository = engine
    state = tmp_path / "state"
    total = 10
    with docker_forged(state, repository) as first:
        job = first.submit(first.train_spec(EXAMPLE_CSV, max_steps=total, checkpoint_every=5))
        container = wait_for_container(first, client, job.id)
        first.wait_until(job.id, lambda j: j.metrics.steps >= 2)
        first.kill9()
        # What a crash may leave of a job that has since ended: the next forged removes it, and leaves
        # alone the container of another forged (another state dir) on the same engine.
        ours = {"forge.managed-by": "forged", "forge.host": f"{socket.gethostname()}:{state.resolve()}"}
        leftover = client.containers.create(f"{repository}:cpu", labels={**ours, "forge.job": "j-gone"})
        theirs = client.containers.create(
            f"{repository}:cpu", labels={**ours, "forge.host": "elsewhere", "forge.job": "j-theirs"}
        )

        second = Forged(state, *_args(repository)).start()
        try:
            events = second.events(job.id, follow=True)
            final = second.get(job.id)
        finally:
            second.cleanup()

    assert final.state == S.JOB_STATE_SUCCEEDED, final.error
    assert [e.state.state for e in events if e.WhichOneof("payload") == "state"].count(
        S.JOB_STATE_SUCCEEDED
    ) == 1
    # The same container trained on: every step reported exactly once, none lost while forged was down,
    # none repeated after (a resume from a checkpoint would repeat the steps after it).
    steps = [e.step.step for e in events if e.WhichOneof("payload") == "step"]
    assert steps == list(range(1, total + 1))
    adapters = [e for e in events if e.WhichOneof("payload") == "artifact" and e.artifact.name == "adapter"]
    assert len(adapters) == 1
    log = [
        json.loads(line) for line in (state / "forged.log").read_text().splitlines() if line.startswith("{")
    ]
    reattached = [r for r in log if r.get("event") == "container_reattached"]
    assert [r["container"] for r in reattached] == [container.short_id]
    said = [e.log.message for e in events if e.WhichOneof("payload") == "log" and e.log.source == "daemon"]
    assert "reattached to the job's container, which kept running while forged was down" in said
    assert not any(m.startswith("resuming from the checkpoint") for m in said)
    assert containers_of(client, job.id) == [] and containers_of(client, "j-gone") == []
    remaining = {c.id for c in client.containers.list(all=True)}
    assert leftover.id not in remaining and theirs.id in remaining
    theirs.remove(force=True)


def test_a_container_over_its_memory_limit_is_oom_killed_and_the_job_heals_with_a_smaller_batch(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    client, repository = engine
    # Step 2 takes 600 MB per example for real, as activations would: micro-batch 4 does not fit in the
    # limit, micro-batch 2 does.
    faults = [{"kind": "allocate", "step": 2, "bytes_per_example": 600_000_000}]
    env = forge_env(FORGE_FAULTS=json.dumps(faults))
    with docker_forged(tmp_path / "state", repository, "--docker-memory", "2200m", env=env) as forged:
        spec = forged.train_spec(
            EXAMPLE_CSV, max_steps=2, micro_batch_size=4, grad_accum=1, checkpoint_every=1
        )
        job = forged.submit(spec)
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL)
        events = forged.events(job.id)

    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    assert [a.outcome for a in done.attempts] == ["oom", "succeeded"]
    assert "micro-batch 2 x accumulation 2" in done.attempts[0].reason
    errors = [e.error for e in events if e.WhichOneof("payload") == "error"]
    assert errors[0].code == "oom" and "SIGKILL" in errors[0].message
    assert done.attempts[1].resumed_from_step == 1
    assert containers_of(client, job.id) == []


def test_cancel_stops_the_container_at_once(tmp_path: Path, engine: tuple[Any, str]) -> None:
    client, repository = engine
    with docker_forged(tmp_path / "state", repository) as forged:
        job = forged.submit(forged.train_spec(EXAMPLE_CSV, max_steps=500))
        container = wait_for_container(forged, client, job.id)
        while container.status != "running":
            time.sleep(0.1)
            container.reload()
        started = time.monotonic()
        forged.jobs.Cancel(S.CancelJobRequest(id=job.id), timeout=30)
        done = forged.wait_until(job.id, lambda j: j.state in TERMINAL, timeout=60)
        stopped_in = time.monotonic() - started

    assert done.state == S.JOB_STATE_CANCELLED
    assert stopped_in < 15, f"cancel took {stopped_in:.1f} s"
    assert containers_of(client, job.id) == []


def _forgectl(forged: Forged, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", forged.address, *args],
        env=forge_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_docker_probe_reports_what_torch_sees_inside_the_image(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    client, repository = engine
    with docker_forged(tmp_path / "state", repository) as forged:
        probed = _forgectl(forged, "docker", "probe", "--json")
        said = _forgectl(forged, "docker", "probe", "--arch", "hopper")

    assert probed.returncode == 0, probed.stderr
    found = json.loads(probed.stdout)
    assert (found["image"], found["arch"], found["ok"]) == (f"{repository}:cpu", "cpu", True)
    report = found["report"]
    # The smoke test ran inside the image: its torch, its architecture, a real LoRA step on its CPU.
    assert report["image_arch"] == "cpu" and report["cuda_available"] is False
    assert report["train_step"]["ok"] is True and report["train_step"]["device"] == "cpu"
    # No hopper image on this engine: one line naming the command that builds it.
    assert said.returncode == 2
    assert said.stderr.strip() == (
        f"error: the runner image {repository}:hopper is not on this machine: build it with `forgectl docker "
        "build --arch hopper` (offline: add --base and --wheelhouse, see docs/runner-images.md)"
    )
    assert [
        c for c in client.containers.list(all=True) if c.labels.get("forge.entry") == "runner_image smoke"
    ] == []


def test_docker_build_streams_the_exact_command_for_the_machines_image(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    _, repository = engine
    with docker_forged(tmp_path / "state", repository) as forged:
        # --dry-run: only the command, for the row's own base and the package indexes.
        out = _forgectl(forged, "docker", "build", "--dry-run")

    assert out.returncode == 0, out.stderr
    (command,) = out.stdout.strip().splitlines()
    # auto on a machine without GPUs is the cpu image, tagged in forged's repository, with the table's values.
    assert command.startswith(f"docker build -f runner_image/docker/Dockerfile -t {repository}:cpu ")
    assert "--build-arg FORGE_ARCH=cpu" in command and "--build-arg RUNNER_PROTOCOL=1" in command


def test_docker_build_builds_the_cpu_image_offline_through_forged_and_streams_the_builders_output(
    tmp_path: Path, engine: tuple[Any, str]
) -> None:
    client, repository = engine
    rebuilt = f"{repository}-rebuilt"
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    try:
        with docker_forged(tmp_path / "state", rebuilt) as forged:
            built = _forgectl(
                forged,
                "docker",
                "build",
                "--arch",
                "cpu",
                "--base",
                base_image(),
                "--wheelhouse",
                str(wheelhouse_dir()),
            )
            no_wheels = _forgectl(forged, "docker", "build", "--arch", "cpu", "--wheelhouse", str(empty))
            no_base = _forgectl(forged, "docker", "build", "--arch", "hopper")
        image = client.images.get(f"{rebuilt}:cpu")
    finally:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(f"{rebuilt}:cpu")

    assert built.returncode == 0, built.stdout + built.stderr
    lines = built.stdout.splitlines()
    # The engine's builder's own lines, relayed as they came: every step of the Dockerfile, the expensive
    # ones from the layer cache the fixture's identical build left.
    steps = [ln for ln in lines if ln.startswith("Step ")]
    assert steps[0].startswith("Step 1/") and steps[-1].split(" : ")[0] == "Step {0}/{0}".format(len(steps))
    assert "Using cache" in built.stdout
    assert lines[-1] == f"Successfully tagged {rebuilt}:cpu"
    labels = image.labels
    assert (labels["forge.arch"], labels["forge.runner-protocol"], labels["forge.cuda"]) == (
        "cpu",
        "1",
        "none",
    )
    assert labels["org.opencontainers.image.base.name"] == base_image()
    assert image.attrs["Config"]["User"] == "forge"
    # The same filesystem as the fixture's image, layer for layer: the engine's cache, not a second install.
    assert image.attrs["RootFS"]["Layers"] == client.images.get(f"{repository}:cpu").attrs["RootFS"]["Layers"]
    # Bad input is one line that says what to do, before anything is built.
    assert no_wheels.returncode == 2
    assert no_wheels.stderr.strip() == (
        f"error: --wheelhouse {empty} holds no wheels: fill it with python -m runner_image.wheelhouse {empty}"
    )
    assert no_base.returncode == 2
    (said,) = no_base.stderr.strip().splitlines()
    assert said.startswith("error: the base image nvidia/cuda:") and "is not on this machine" in said
    # What to do: get the base onto the engine, or build on one that is there.
    assert "`docker pull` or `docker load` it" in said and "build on a local base with --base" in said
