"""Every model family and every data shape through the daemon, as a user runs it: `forgectl ignite`.

One job per family, the shapes spread over the families so that each shape reaches the trainer through a
real forged at least once (a full cross product is 48 trainings; the formatting of every family on every
shape is checked in-process by tests/runner/test_runner_families.py and test_runner_shapes.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Forged, running_forged
from test_cli_e2e import forgectl, last_json

from runner_image.tiny import FAMILIES

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "shapes"
# Gemma and Mistral get the shapes with a system prompt, which their templates cannot place as written.
RUNS = {
    "smollm": "alpaca.json",
    "tinyllama": "prompt_completion.jsonl",
    "llama": "plain.txt",
    "qwen": "alpaca.json",
    "phi": "documents.jsonl",
    "gemma": "sharegpt.json",
    "gemma2": "prompt_completion.jsonl",
    "mistral": "chat_weights.jsonl",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forged]:
    with running_forged(tmp_path_factory.mktemp("families") / "state", "--max-jobs", "2") as d:
        yield d


def test_the_runs_cover_every_family_and_every_shape() -> None:
    assert sorted(RUNS) == sorted(FAMILIES)
    assert sorted(set(RUNS.values())) == sorted(p.name for p in SHAPES.iterdir())


@pytest.fixture(scope="module")
def submitted(daemon: Forged) -> dict[str, str]:
    """All jobs submitted up front (detached), so the daemon trains two at a time while we wait."""
    ids = {}
    for family, shape in RUNS.items():
        done = forgectl(
            "ignite", str(SHAPES / shape), "Learn this data's format", "--model", f"tiny-{family}",
            "--max-steps", "2", "--no-export", "--detach", "--json", daemon=daemon,
        )  # fmt: skip
        assert done.returncode == 0, f"tiny-{family} on {shape}: {done.stderr}"
        ids[family] = last_json(done.stdout)["id"]
    return ids


@pytest.mark.parametrize("family", sorted(RUNS))
def test_ignite_trains_every_tiny_family_through_the_daemon(
    family: str, daemon: Forged, submitted: dict[str, str]
) -> None:
    done = forgectl("watch", submitted[family], "--json", daemon=daemon, timeout=600)
    assert done.returncode == 0, f"tiny-{family} on {RUNS[family]}: {done.stdout[-2000:]} {done.stderr}"
    assert "Traceback" not in done.stderr
    job = last_json(done.stdout)
    assert job["state"] == "succeeded"
    assert job["metrics"]["steps"] == 2
    adapter = Path(job["artifacts"]["adapter"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    # The adapter names the family it was trained on, so export rebuilds the right base.
    assert config["base_model_name_or_path"] == (
        "forge-tiny" if family == "smollm" else f"forge-tiny-{family}"
    )
