"""Runs the trainer in a container of the runner image built for the job's GPUs.

The container sees nothing of the host but the job's workspace (read-write) and the paths its spec names
outside it (the model, a source job's adapter; read-only), each at the same path as on the host so the spec
needs no rewriting. It has no network (forged fetches models before a job starts), a read-only root with a
private /tmp, memory and process limits, no capabilities, no privilege escalation, and only the GPUs the
scheduler placed the job on. It never runs as root: it runs as forged's own uid, the owner of the
workspace, or, when forged itself is root, as the image's unprivileged `forge` user (RUNNER_UID), to which
forged hands the job's workspace before each start (`hand_over`).

Containers carry the job id in a label and outlive forged: the runner cannot see a daemon outside its pid
namespace, so it keeps training when forged dies. The next forged requeues the job as usual, and when the
job starts again `start` finds the container and reattaches to it (still running, or already exited: its
log and exit status are still there) instead of starting another. The lines already relayed are counted
in the workspace, so the job's events are neither lost nor repeated. Containers of jobs that are no longer
queued are removed at start-up (`remove_stale`).

Steps that are forged's own code (the GGUF writer and parity gate of an export) are not the runner's and
run as local processes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from forged.executors import image_build
from forged.executors.base import (
    QLORA_CHECK,
    ExecutorError,
    RunHandle,
    RunRequest,
    engine_message,
    qlora_check_answer,
    qlora_check_failed,
)
from forged.executors.images import (
    CPU_ARCH,
    GPU_ARCHES,
    ImageChoice,
    device_requests,
    image_for_capability,
    image_tag,
    parse_capability,
)
from forged.executors.local import QLORA_CHECK_SECONDS, LocalExecutor

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from forged.hardware.nvml import GpuInfo

log = structlog.get_logger("forged.docker")

RUNNER_MODULE = "runner_image"
# The checkout forged runs from: image builds need its runner_image/docker/ and its build context.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# What forged and the runner image must agree on (docs/runner-protocol.md); the image says in a label which
# one it speaks, and tests/daemon/test_docker_executor.py checks this equals runner_image's.
RUNNER_PROTOCOL = "1"
LABEL_JOB = "forge.job"
LABEL_ENTRY = "forge.entry"
LABEL_MANAGED = "forge.managed-by"
LABEL_HOST = "forge.host"  # which forged: two on one engine (two state dirs) leave each other's alone
MANAGER = "forged"
CURSOR_FILE = ".docker-log-lines"
# Runner settings forged's environment may carry to the container (tests inject faults and precision this
# way). Everything else of the daemon's environment, secrets above all, stays out.
PASSED_ENV_PREFIX = "FORGE_"
WITHHELD_ENV = frozenset({"FORGE_TOKEN", "FORGE_DAEMON", "FORGE_PARENT_PID", "FORGE_FAKE_GPUS"})
# The image's unprivileged user (runner_image/docker/Dockerfile creates `forge` with this uid and group).
RUNNER_UID = 10001
DEFAULT_PIDS_LIMIT = 4096  # threads count: torch's intra-op pool and tokenizers' workers, with room


def container_name(job_id: str) -> str:
    return f"forge-{job_id}"


def exit_status(state: dict[str, Any]) -> int:
    """A container's end as a process's: a negative signal number when a signal (or the OOM killer) ended
    it, as subprocess reports it and the supervisor's self-healing reads it."""
    if state.get("OOMKilled"):
        return -signal.SIGKILL
    code = int(state.get("ExitCode", 0))
    # docker-init (pid 1) reports a child killed by signal N as 128 + N, as a shell does.
    return -(code - 128) if 128 < code < 160 else code


def spec_mounts(spec_path: Path, workspace: Path) -> list[Path]:
    """The host paths a runner spec names outside the workspace, to mount read-only at the same place.

    A model in the Hugging Face cache is a snapshot of symlinks into the repo's blobs/, so the whole repo
    folder (models--org--name) is mounted, not just the snapshot.
    """
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise ExecutorError(f"cannot read the runner spec {spec_path}: {exc}") from exc
    found: set[Path] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("/"):
            path = Path(value)
            if path.exists() and not path.is_relative_to(workspace):
                snapshots = next((p for p in path.parents if p.name == "snapshots"), None)
                found.add(snapshots.parent if snapshots is not None else path)

    walk(spec)
    # A folder already mounted covers what lies inside it.
    return sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found))


def container_ids(uid: int, gid: int) -> tuple[int, int]:
    """Who a job's container runs as: forged's own uid and gid, unless that is root."""
    return (RUNNER_UID, RUNNER_UID) if uid == 0 else (uid, gid)


def hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Make the job's workspace the container user's, so the runner can write its checkpoints and outputs
    there (forged, as root, keeps full access). A file with more than one link is the blob store's (the job's
    data is hard-linked from it, and other jobs may share it): it is made readable, never given away."""
    for path in (workspace, *workspace.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o444)
        elif (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)


def locked_down(gpu_ids: list[str], memory_bytes: int, pids_limit: int, user: str) -> dict[str, Any]:
    """What every container of forged's gets, a job's or a probe's: the security posture in one place."""
    return {
        "user": user,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
        "shm_size": "1g",  # PyTorch's shared-memory tensors; Docker's 64 MB default is too small
        "mem_limit": memory_bytes,
        "memswap_limit": memory_bytes,  # no swap: a job over its limit is OOM-killed and healed, not slowed
        "pids_limit": pids_limit,
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        # docker-init as pid 1 forwards SIGTERM (checkpoint and stop) to the runner and reaps its children.
        "init": True,
        "device_requests": device_requests(gpu_ids),
        "stdin_open": False,
        "tty": False,
    }


def runner_environment(environ: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k.startswith(PASSED_ENV_PREFIX) and k not in WITHHELD_ENV}
    env.update(
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        HOME="/tmp",  # the root filesystem is read-only; caches go to the private /tmp
        XDG_CACHE_HOME="/tmp/cache",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def container_config(
    request: RunRequest,
    image: str,
    gpu_ids: list[str],
    memory_bytes: int,
    pids_limit: int,
    environ: dict[str, str],
    user: str,
    host: str = "",
) -> dict[str, Any]:
    """The keyword arguments of `containers.create` for one runner process, so tests can hold them to the
    rules in the module docstring."""
    workspace = str(request.workspace)
    volumes = {workspace: {"bind": workspace, "mode": "rw"}}
    for path in spec_mounts(request.spec_path, request.workspace):
        volumes[str(path)] = {"bind": str(path), "mode": "ro"}
    return {
        "image": image,
        "name": container_name(request.job_id),
        "entrypoint": ["python", "-m", *request.entry],
        "command": ["--spec", str(request.spec_path)],
        "labels": {
            LABEL_JOB: request.job_id,
            LABEL_ENTRY: " ".join(request.entry),
            LABEL_MANAGED: MANAGER,
            LABEL_HOST: host,
        },
        "working_dir": workspace,
        "environment": runner_environment(environ),
        "volumes": volumes,
        **locked_down(gpu_ids, memory_bytes, pids_limit, user),
    }


@dataclass(frozen=True)
class ImageProbe:
    image: str
    choice: ImageChoice
    ok: bool
    reason: str
    report_json: str


class DockerHandle:
    """One container's output and end; also a container left by a previous forged, read from where that
    forged stopped relaying."""

    def __init__(self, container: Container, cursor: Path, reattached: bool = False) -> None:
        self._container = container
        self._cursor = cursor
        self.reattached = reattached

    @property
    def pid(self) -> int | None:
        # No process of this host's to record: a restarted forged finds the container by its label.
        return None

    @property
    def pid_started(self) -> float | None:
        return None

    def _relayed(self) -> int:
        try:
            return int(self._cursor.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def lines(self) -> Iterator[str]:
        skip = self._relayed()
        count = 0
        pending = b""
        for chunk in self._container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                count += 1
                if count <= skip:
                    continue
                yield raw.decode("utf-8", errors="replace").rstrip("\r")
                # Back here, the caller has handled the line: a forged killed now repeats none of it.
                self._cursor.write_text(str(count))
        if pending:
            count += 1
            if count > skip:
                yield pending.decode("utf-8", errors="replace")
                self._cursor.write_text(str(count))

    def wait(self) -> int:
        import docker

        try:
            self._container.wait()
            self._container.reload()
            code = exit_status(self._container.attrs.get("State", {}))
        except docker.errors.NotFound:
            return -signal.SIGKILL  # removed under us (docker rm -f): as good as killed
        with contextlib.suppress(docker.errors.APIError):
            self._container.remove(force=True)
        with contextlib.suppress(OSError):
            self._cursor.unlink()
        return code

    def _signal(self, sig: str) -> None:
        import docker

        # 404 or 409: the container is gone or has already stopped, which is what was asked for.
        with contextlib.suppress(docker.errors.APIError):
            self._container.kill(signal=sig)

    def terminate(self) -> None:
        self._signal("SIGTERM")

    def kill(self) -> None:
        self._signal("SIGKILL")


class DockerExecutor:
    name = "docker"

    def __init__(
        self,
        client: DockerClient,
        gpus: Callable[[], list[GpuInfo]] = list,
        repository: str = "forge",
        memory_bytes: int | None = None,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        local: LocalExecutor | None = None,
        host: str = "",
    ) -> None:
        self.client = client
        self.host = host
        self.gpus = gpus
        self.repository = repository
        self.memory_bytes = memory_bytes or default_memory_bytes()
        self.pids_limit = pids_limit
        self.local = local or LocalExecutor()
        self.uid, self.gid = container_ids(os.getuid(), os.getgid())
        self.user = f"{self.uid}:{self.gid}"
        # Per image and GPU set, for forged's lifetime: a rebuilt image under the same tag needs a restart.
        self._qlora: dict[tuple[str, tuple[str, ...]], str] = {}

    @classmethod
    def connect(cls, **kwargs: Any) -> DockerExecutor:
        """Talk to the engine DOCKER_HOST names (else the default socket); ExecutorError if there is none."""
        try:
            import docker
        except ImportError as exc:
            raise ExecutorError(
                "--executor docker needs the docker Python package (pip install docker)"
            ) from exc
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except Exception as exc:  # the SDK raises DockerException, requests' and socket errors alike
            where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
            raise ExecutorError(
                f"no Docker engine answers at {where} ({engine_message(exc)}): start dockerd, set "
                "DOCKER_HOST, or run forged with --executor local"
            ) from exc
        return cls(client, **kwargs)

    # -- choosing the image ----------------------------------------------------------------------------
    def image_for(self, gpu_indices: tuple[int, ...] | None) -> tuple[ImageChoice, list[str]]:
        """The image for these GPUs and the ids to request them by (NVML UUIDs, stable across renumbering);
        the cpu image and no devices for a job without GPUs."""
        if not gpu_indices:
            return image_for_capability(None), []
        by_index = {g.index: g for g in self.gpus()}
        chosen = [by_index[i] for i in gpu_indices if i in by_index]
        if len(chosen) != len(gpu_indices):
            raise ExecutorError(f"GPUs {list(gpu_indices)} are not all known to NVML any more")
        # Mixed GPUs get the image of the oldest: its kernels run on the newer card too, not the reverse.
        oldest = min(parse_capability(g.compute_capability) for g in chosen)
        return image_for_capability(oldest), [g.uuid or str(g.index) for g in chosen]

    def _image(self, choice: ImageChoice) -> str:
        import docker

        tag = f"{self.repository}:{choice.arch}"
        try:
            image = self.client.images.get(tag)
        except docker.errors.ImageNotFound as exc:
            raise ExecutorError(
                f"the runner image {tag} is not on this machine: build it with `forgectl docker build --arch "
                f"{choice.arch}` (offline: add --base and --wheelhouse, see docs/runner-images.md)"
            ) from exc
        speaks = (image.labels or {}).get("forge.runner-protocol", "")
        if speaks != RUNNER_PROTOCOL:
            raise ExecutorError(
                f"the runner image {tag} speaks runner protocol {speaks or 'unknown'}, this forged speaks "
                f"{RUNNER_PROTOCOL}: rebuild it from this version with `forgectl docker build --arch "
                f"{choice.arch}`"
            )
        return tag

    # -- running ---------------------------------------------------------------------------------------
    def start(self, request: RunRequest) -> RunHandle:
        if request.entry[0] != RUNNER_MODULE:
            return self.local.start(request)  # forged's own code (export's converter) is not in the image
        import docker
        import requests

        try:
            return self._start(request)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # The engine went away or refused something unexpected: the job's problem, not forged's.
            raise ExecutorError(f"the Docker engine failed: {engine_message(exc)}") from exc

    def _start(self, request: RunRequest) -> RunHandle:
        import docker

        cursor = request.workspace / CURSOR_FILE
        existing = self._existing(request.job_id)
        if existing is not None:
            if existing.labels.get(LABEL_ENTRY) == " ".join(request.entry):
                log.info("container_reattached", job=request.job_id, container=existing.short_id)
                return DockerHandle(existing, cursor, reattached=True)
            existing.remove(force=True)  # a step this job no longer wants: start the one it does
        with contextlib.suppress(OSError):
            cursor.unlink()
        choice, gpu_ids = self.image_for(request.gpu_indices)
        image = self._image(choice)
        if os.getuid() == 0:
            try:
                hand_over(request.workspace, self.uid, self.gid)
            except OSError as exc:
                raise ExecutorError(
                    f"cannot give the job's workspace to the container's user {self.user}: {exc}"
                ) from exc
        config = container_config(
            request,
            image,
            gpu_ids,
            self.memory_bytes,
            self.pids_limit,
            dict(os.environ),
            self.user,
            self.host,
        )
        try:
            container = self.client.containers.create(**config)
        except docker.errors.APIError as exc:
            raise ExecutorError(
                f"Docker refused to create the job's container: {engine_message(exc)}"
            ) from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            hint = ""
            if gpu_ids and "nvidia" in str(exc).lower():
                hint = "; install the NVIDIA Container Toolkit and restart dockerd"
            raise ExecutorError(
                f"Docker could not start the job's container: {engine_message(exc)}{hint}"
            ) from exc
        log.info("container_started", job=request.job_id, container=container.short_id, image=image)
        if choice.note:
            log.warning("image_choice", job=request.job_id, note=choice.note)
        return DockerHandle(container, cursor)

    def probe(self, arch: str = "") -> ImageProbe:
        """Run the image's smoke test on this machine's GPUs (all of them) and read its report. `arch`
        empty or "auto": the image forged would choose; else that architecture's image."""
        import docker
        import requests

        choice, gpu_ids = self._choose(arch)
        try:
            image = self._image(choice)
            environment = {**runner_environment({}), "FORGE_IMAGE_ARCH": choice.arch}
            code, out, err = self._run_once(image, gpu_ids, ("smoke",), environment, timeout=600)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            hint = (
                "; install the NVIDIA Container Toolkit" if gpu_ids and "nvidia" in str(exc).lower() else ""
            )
            raise ExecutorError(
                f"the smoke test of {choice.arch} did not run: {engine_message(exc)}{hint}"
            ) from exc
        report_json = out.splitlines()[-1] if out else ""
        try:
            report = json.loads(report_json)
        except ValueError:
            report = {}
        ok = code == 0 and bool(report.get("ok"))
        reason = "" if ok else str(report.get("reason") or _last_line(err) or f"the smoke test exited {code}")
        return ImageProbe(image, choice, ok, reason, report_json)

    def _run_once(
        self,
        image: str,
        gpu_ids: list[str],
        command: tuple[str, ...],
        environment: dict[str, str],
        timeout: float,
    ) -> tuple[int, str, str]:
        """One short-lived runner container under a job's lock-down: its exit status, stdout and stderr.
        Docker's errors are the caller's to word."""
        import docker

        container = self.client.containers.create(
            image,
            entrypoint=["python", "-m", RUNNER_MODULE],
            command=list(command),
            labels={
                LABEL_MANAGED: MANAGER,
                LABEL_HOST: self.host,
                LABEL_ENTRY: " ".join((RUNNER_MODULE, *command)),
            },
            environment=environment,
            **locked_down(gpu_ids, self.memory_bytes, self.pids_limit, self.user),
        )
        try:
            container.start()
            container.wait(timeout=timeout)
            container.reload()
            code = exit_status(container.attrs.get("State", {}))
            out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace").strip()
            err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace").strip()
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        return code, out, err

    def qlora_missing(self, gpu_indices: tuple[int, ...]) -> str:
        """Asks a container of the image a job on these GPUs gets, with those GPUs: the image decides (a
        cpu image, or one built without bitsandbytes, cannot), not the host."""
        import docker
        import requests

        try:
            choice, gpu_ids = self.image_for(gpu_indices)
            image = self._image(choice)
        except ExecutorError as exc:
            return str(exc)
        key = (image, tuple(gpu_ids))
        if key in self._qlora:
            return self._qlora[key]
        where = f"the runner image {image}"
        try:
            code, out, err = self._run_once(
                image, gpu_ids, QLORA_CHECK[1:], runner_environment({}), timeout=QLORA_CHECK_SECONDS
            )
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return qlora_check_failed(where, engine_message(exc))
        answer = qlora_check_answer(code, out, err, where)
        if code == 0:
            self._qlora[key] = answer
        return answer

    def _choose(self, arch: str) -> tuple[ImageChoice, list[str]]:
        """An architecture asked for by name ("" or "auto": the one for this machine's GPUs), and the ids
        of every GPU here it would run on."""
        gpus = self.gpus()
        if arch in ("", "auto"):
            return self.image_for(tuple(g.index for g in gpus) or None)
        if arch not in (*GPU_ARCHES, CPU_ARCH):
            raise ExecutorError(f"--arch {arch}: use auto, {', '.join(GPU_ARCHES)} or {CPU_ARCH}")
        gpu_ids = [g.uuid or str(g.index) for g in gpus] if arch != CPU_ARCH else []
        return ImageChoice(arch=arch, tag=image_tag(arch)), gpu_ids

    def build(
        self, arch: str, dry_run: bool = False, base: str = "", wheelhouse: str = ""
    ) -> tuple[str, Iterator[str]]:
        """Build the image for `arch` from the source checkout forged runs from, through the engine's API:
        returns the tag and the build's output lines, which raise ExecutorError if it fails. `base`: a local
        image in place of the row's; `wheelhouse`: a folder of wheels on this machine, which makes the build
        offline. Whatever stops it before it starts (no sources, a bad wheelhouse, a base that can be
        neither found nor pulled) is an ExecutorError raised here, at once."""
        from runner_image.image_versions import (
            VersionsError,
            build_args,
            build_command,
            load_versions,
            provenance,
        )

        choice, _ = self._choose(arch)
        tag = f"{self.repository}:{choice.arch}"
        if not (SOURCE_ROOT / image_build.DOCKERFILE).is_file():
            raise ExecutorError(
                "this forged is installed without Forge's sources, which the build needs: in a clone of "
                f"Forge run runner_image/docker/build.sh {choice.arch} --tag {tag}"
            )
        wheels = image_build.wheelhouse_dir(wheelhouse)
        try:
            table = load_versions()
            made = provenance()
            args = build_args(choice.arch, table, base=base or None, **made)
        except VersionsError as exc:
            raise ExecutorError(str(exc)) from exc
        if dry_run:
            command = build_command(
                choice.arch, table, tag=tag, base=base or None, offline=wheels is not None, **made
            )
            said = [shlex.join(command)]
            if wheels is not None:
                said.append(f"# with the wheels of {wheels} as {image_build.WHEELHOUSE}/")
            return tag, iter(said)
        pull = image_build.ensure_base(self.client, args["BASE_IMAGE"])
        return tag, itertools.chain(pull, image_build.build(self.client, SOURCE_ROOT, tag, args, wheels))

    def _mine(self, *labels: str) -> list[Container]:
        wanted = [f"{LABEL_MANAGED}={MANAGER}", f"{LABEL_HOST}={self.host}", *labels]
        return list(self.client.containers.list(all=True, filters={"label": wanted}))

    def _existing(self, job_id: str) -> Container | None:
        found = self._mine(f"{LABEL_JOB}={job_id}")
        return found[0] if found else None

    def remove_stale(self, keep: set[str]) -> list[str]:
        """Remove forged's containers whose job is not in `keep` (the queued jobs, which may reattach):
        what a crash left of finished or cancelled jobs. Returns their job ids."""
        import docker

        removed = []
        for container in self._mine():
            job_id = container.labels.get(LABEL_JOB, "")
            if job_id in keep:
                continue
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
                removed.append(job_id)
                log.info("stale_container_removed", job=job_id, container=container.short_id)
        return removed


def default_memory_bytes() -> int:
    """Nine tenths of this machine's memory: a runaway job is stopped before the host starts to thrash."""
    import psutil

    return int(psutil.virtual_memory().total * 0.9)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
