"""forged's choice of runner image for a GPU, and its agreement with the images' own versions table."""

from __future__ import annotations

import pytest

from forged.executors.images import (
    ImageChoice,
    device_requests,
    image_for_capability,
    image_tag,
    parse_capability,
)
from runner_image import image_versions


def test_every_capability_an_image_is_built_for_chooses_that_image() -> None:
    table = image_versions.load_versions()
    for arch, row in table.arch.items():
        assert image_tag(arch) == image_versions.image_tag(arch)
        for cap in row.compute_capabilities:
            assert image_for_capability(parse_capability(cap)) == ImageChoice(arch, f"forge:{arch}")


@pytest.mark.parametrize(
    ("capability", "arch"),
    [((12, 0), "blackwell"), ((12, 1), "blackwell"), ((10, 3), "blackwell"), ((9, 0), "hopper"),
     ((8, 9), "ada"), ((8, 6), "ampere"), ((8, 0), "ampere")],
)  # fmt: skip
def test_gpus_of_a_supported_generation_get_their_image_without_caveat(
    capability: tuple[int, int], arch: str
) -> None:
    assert image_for_capability(capability) == ImageChoice(arch, f"forge:{arch}", "")


def test_no_gpu_means_the_cpu_image() -> None:
    assert image_for_capability(None) == ImageChoice("cpu", "forge:cpu", "")


@pytest.mark.parametrize("capability", [(7, 0), (7, 5)])
def test_volta_and_turing_train_in_fp32_on_the_ampere_image(capability: tuple[int, int]) -> None:
    choice = image_for_capability(capability)
    assert (choice.arch, choice.tag) == ("ampere", "forge:ampere")
    assert "predates Ampere" in choice.note and "fp32" in choice.note


def test_pascal_and_unknown_generations_fall_back_to_the_cpu_with_a_reason() -> None:
    old = image_for_capability((6, 1))
    assert (
        old.arch == "cpu"
        and old.note == "sm_61 is too old for the GPU images' PyTorch builds: training runs on the CPU"
    )
    future = image_for_capability((11, 0))
    assert future.arch == "cpu" and future.note.startswith("no runner image is built for sm_110 yet")


def test_a_malformed_capability_is_refused_clearly() -> None:
    assert parse_capability("8.6") == (8, 6)
    with pytest.raises(ValueError, match=r"compute capability '86' is not of the form MAJOR\.MINOR"):
        parse_capability("86")


def test_a_containers_device_request_names_exactly_the_jobs_gpus() -> None:
    (by_uuid,) = device_requests(["GPU-6f1a", "GPU-77c0"])
    # The Engine API's HostConfig.DeviceRequests entry, as `docker run --gpus '"device=..."'` sends it.
    assert dict(by_uuid) == {
        "Driver": "nvidia",
        "Count": 0,
        "DeviceIDs": ["GPU-6f1a", "GPU-77c0"],
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    (by_index,) = device_requests([1])
    assert by_index["DeviceIDs"] == ["1"]
    assert device_requests([]) == [], "a CPU job asks for no device at all"
