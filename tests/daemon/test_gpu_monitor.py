"""The GPU inventory: refreshed in the background, a failed reading keeps the last one, no GPU is an
answer."""

from __future__ import annotations

import json
import time

import pytest

from forged.hardware import nvml
from forged.hardware.nvml import GpuMonitor, Inventory, fake_inventory


class CountingProbe:
    """The hardware boundary: free memory drops by 1 GiB per reading, as if a job were loading."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self) -> Inventory:
        if self.fail:
            raise RuntimeError("NVML: driver not loaded")
        self.calls += 1
        gpus = fake_inventory(json.dumps([{"memory_free_bytes": (80 - self.calls) << 30}])).gpus
        return Inventory(gpus=gpus)


def test_the_inventory_refreshes_in_the_background_without_anyone_asking() -> None:
    probe = CountingProbe()
    monitor = GpuMonitor(interval=0.05, probe=probe)
    monitor.start()
    try:
        first = monitor.get().gpus[0].memory_free_bytes
        deadline = time.monotonic() + 5
        while probe.calls < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert probe.calls >= 4
        assert monitor.get().gpus[0].memory_free_bytes < first
        # A reading that fails keeps the last good one: a driver hiccup does not make the GPUs vanish.
        probe.fail = True
        before = monitor.get()
        assert monitor.refresh() is before
    finally:
        monitor.stop()


def test_without_the_background_thread_answers_are_reused_for_the_interval() -> None:
    probe = CountingProbe()
    monitor = GpuMonitor(interval=60, probe=probe)
    monitor.get()
    monitor.get()
    assert probe.calls == 1
    monitor.refresh()
    assert probe.calls == 2


def test_a_machine_without_nvidia_gpus_is_a_normal_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(nvml.FAKE_ENV, raising=False)
    inv = nvml.probe()
    if inv.gpus:
        pytest.skip("this machine has NVIDIA GPUs")
    assert inv.message.startswith("no NVIDIA GPU found") and inv.cpu_count > 0


def test_the_fake_inventory_fills_in_an_idle_h100_and_refuses_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(nvml.FAKE_ENV, json.dumps([{}, {"name": "NVIDIA L4", "memory_total_bytes": 24 << 30}]))
    inv = nvml.probe()
    assert [(g.index, g.name, g.memory_free_bytes >> 30) for g in inv.gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 80),
        (1, "NVIDIA L4", 24),
    ]
    with pytest.raises(ValueError, match="FORGE_FAKE_GPUS must be a JSON list of GPU objects"):
        fake_inventory('{"gpus": 2}')
    with pytest.raises(ValueError, match="FORGE_FAKE_GPUS"):
        fake_inventory('[{"vram": 1}]')
