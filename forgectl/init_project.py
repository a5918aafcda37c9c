"""`forgectl init [DIR]`: a project directory (forge.yaml skeleton, data/, .forge/project.json) registered
with forged, and its brain chosen, keyed and checked."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from forge.v1 import projects_pb2

from forgectl import brain_access
from forgectl.client import Client, ForgeError
from forgectl.project import (
    BRAIN_REASON,
    CONFIG_FILE,
    DATA_DIR,
    PROJECT_FILE,
    STATE_DIR,
    BrainSettings,
    ForgeConfig,
    ProjectInfo,
    atomic_write,
    render_config,
    write_project,
    writing,
)


@dataclass(frozen=True)
class Created:
    root: Path
    project: ProjectInfo
    key: brain_access.Outcome | None
    check: brain_access.Outcome


def refuse_existing(root: Path) -> None:
    """Checked before any daemon call: an existing project is never touched."""
    if root.exists() and not root.is_dir():
        raise ForgeError(f"{root} exists and is not a directory")
    for marker in (Path(STATE_DIR) / PROJECT_FILE, Path(CONFIG_FILE)):
        if (root / marker).exists():
            raise ForgeError(f"{root} is already a forge project ({marker} exists): nothing changed")


def create(client: Client, root: Path, brain: BrainSettings, key: str | None) -> Created:
    """The daemon is asked to register the project only once the directory is written, and a failed
    registration takes back what was written: a failure at any step leaves neither an orphaned project in
    forged nor a half-made directory that the next `init` would refuse."""
    stored = brain_access.store_key(client, brain.kind, key) if key else None
    checked = brain_access.check(client, brain)
    made_root, made_data = not root.exists(), not (root / DATA_DIR).exists()
    with writing(root):
        (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    config = ForgeConfig(brain=brain)
    reasons = {
        "brain.kind": BRAIN_REASON[brain.kind],
        "training.export": "`forgectl plan` fills in the model and the rest, each with its reason",
    }
    try:
        atomic_write(root / CONFIG_FILE, render_config(config, reasons))
        made = client.projects.Create(projects_pb2.CreateProjectRequest(name=root.resolve().name), timeout=30)
    except BaseException:
        _take_back(root, made_root, made_data)
        raise
    info = ProjectInfo(id=made.id, name=made.name)
    write_project(root, info)  # last: its presence is what makes the directory a project
    return Created(root, info, stored, checked)


def _take_back(root: Path, made_root: bool, made_data: bool) -> None:
    (root / CONFIG_FILE).unlink(missing_ok=True)
    for folder, made in ((root / DATA_DIR, made_data), (root, made_root)):
        if made:
            with contextlib.suppress(OSError):  # not empty: the user put something there meanwhile
                folder.rmdir()
