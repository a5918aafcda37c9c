"""Which runner image fits a GPU: NVML's compute capability in, an image architecture and tag out.

Pure: no NVML, no Docker. The images are defined in runner_image/docker/ (versions.toml lists the
capabilities each is built for); forged keeps out of runner_image, so tests/daemon/test_image_choice.py
checks that this mapping agrees with that table.

GPUs older than Ampere: Volta and Turing (7.x) get the ampere image. Its CUDA 12.6 build of torch still
carries sm_70/sm_75 kernels, and the runner trains there in fp32 (bf16 needs 8.0), so it is slower and needs
twice the memory per parameter, but it is far faster than the CPU. Pascal and older (6.x and below) get the
cpu image: current PyTorch CUDA builds no longer reliably ship kernels for them. Either way the image's smoke
test (`forge-runner smoke`) has the last word before a job runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forged.hardware.nvml import architecture

if TYPE_CHECKING:
    from docker.types import DeviceRequest

IMAGE_REPOSITORY = "forge"
GPU_ARCHES = ("blackwell", "hopper", "ada", "ampere")
CPU_ARCH = "cpu"


@dataclass(frozen=True)
class ImageChoice:
    arch: str
    tag: str
    # Empty when the image is the one built for this GPU; otherwise what the user gives up, in one line.
    note: str = ""


def image_tag(arch: str) -> str:
    return f"{IMAGE_REPOSITORY}:{arch}"


def _choice(arch: str, note: str = "") -> ImageChoice:
    return ImageChoice(arch=arch, tag=image_tag(arch), note=note)


def parse_capability(capability: str) -> tuple[int, int]:
    """'8.6' (as forged.hardware.nvml reports it) -> (8, 6); ValueError with a clear message otherwise."""
    major, dot, minor = capability.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise ValueError(f"compute capability {capability!r} is not of the form MAJOR.MINOR, e.g. 8.6")
    return int(major), int(minor)


def image_for_capability(capability: tuple[int, int] | None) -> ImageChoice:
    """The runner image for a GPU of this compute capability; None (no GPU) gives the cpu image."""
    if capability is None:
        return _choice(CPU_ARCH)
    major, minor = capability
    arch = architecture(major, minor)
    if arch in GPU_ARCHES:
        return _choice(arch)
    sm = f"sm_{major}{minor}"
    if major == 7:
        return _choice(
            "ampere",
            f"{sm} ({arch}) predates Ampere: the ampere image trains on it in fp32, without bf16, "
            "slower and with twice the memory per parameter",
        )
    if major < 7:
        return _choice(
            CPU_ARCH, f"{sm} is too old for the GPU images' PyTorch builds: training runs on the CPU"
        )
    return _choice(
        CPU_ARCH,
        f"no runner image is built for {sm} yet: training runs on the CPU; add a row to "
        "runner_image/docker/versions.toml",
    )


def device_requests(gpu_ids: Sequence[str | int]) -> list[DeviceRequest]:
    """What `docker run --gpus device=...` sends for a job's GPUs: one request for exactly these devices
    (NVML UUIDs, which survive renumbering, or indices), through the NVIDIA runtime. None for a CPU job: an
    empty device_ids list would not mean "no GPU" to every runtime, so no request is made at all."""
    if not gpu_ids:
        return []
    from docker.types import DeviceRequest  # the SDK is only needed once a container is started

    return [DeviceRequest(driver="nvidia", device_ids=[str(g) for g in gpu_ids], capabilities=[["gpu"]])]
