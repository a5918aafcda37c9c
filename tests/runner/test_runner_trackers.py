"""TensorBoard curves across a resume, and remote trackers that are configured but cannot be used."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner_image.trackers import TENSORBOARD_DIR, Trackers


def _curve(output_dir: Path, tag: str) -> dict[int, float]:
    board = EventAccumulator(str(output_dir / TENSORBOARD_DIR))
    board.Reload()
    points = [(s.step, s.value) for s in board.Scalars(tag)]
    assert len({step for step, _ in points}) == len(points), f"a step appears twice: {points}"
    return dict(points)


def test_a_resumed_attempt_replaces_what_the_interrupted_one_logged_past_its_checkpoint(
    tmp_path: Path,
) -> None:
    first = Trackers(tmp_path, "j-1", 0, {})
    for step in range(1, 7):  # killed after step 6; its last checkpoint was at step 4
        first.log(step, {"train/loss": 10.0 - step})
    first.close()

    second = Trackers(tmp_path, "j-1", 5, {})
    for step in range(5, 9):
        second.log(step, {"train/loss": 100.0 + step})
    second.close()

    assert _curve(tmp_path, "train/loss") == {
        1: 9.0,
        2: 8.0,
        3: 7.0,
        4: 6.0,
        5: 105.0,
        6: 106.0,
        7: 107.0,
        8: 108.0,
    }


def test_remote_trackers_configured_but_not_installed_say_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("wandb") or importlib.util.find_spec("mlflow"):
        pytest.skip("this checks the runner image, which ships neither wandb nor mlflow")
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    trackers = Trackers(tmp_path, "j-1", 0, {})
    trackers.log(1, {"train/loss": 1.0})
    trackers.close()
    messages = [json.loads(line)["log"]["message"] for line in capsys.readouterr().out.splitlines()]
    assert messages == [
        "WANDB_API_KEY is set but wandb is not installed in the runner: not logging to W&B",
        "MLFLOW_TRACKING_URI is set but mlflow is not installed in the runner: not logging to MLflow",
    ]
    assert _curve(tmp_path, "train/loss") == {1: 1.0}  # TensorBoard regardless


def test_no_remote_tracker_and_no_line_when_none_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Trackers(tmp_path, "j-1", 0, {}).close()
    assert capsys.readouterr().out == ""
