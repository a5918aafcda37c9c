"""`forgectl train`: forge.yaml as it stands now (the user's edits included) plus the prepared data's digests
become one training job of the project."""

from __future__ import annotations

from collections.abc import Callable

from forge.v1 import jobs_pb2

from forgectl import brain_access, ignite, output
from forgectl.client import Client, ForgeError
from forgectl.prepare import file_digest
from forgectl.project import ForgeConfig, Workspace, load_plan, load_prepared, memory_inputs


def _digest(
    ws: Workspace, client: Client, relative: str, recorded: str, notice: Callable[[str], None], required: bool
) -> str:
    """The prepared file's digest when it is unchanged (no upload); an edited or new file is uploaded."""
    if not relative:
        return ""
    path = ws.path(relative)
    if not path.is_file():
        if required:
            raise ForgeError(
                f'{relative} does not exist: run `forgectl prepare FILE "GOAL"` '
                "(or fix data.train in forge.yaml)"
            )
        return ""
    digest = file_digest(path)
    if digest == recorded:
        return digest
    if recorded:
        notice(f"{relative} changed since prepare: uploading your copy")
    return ignite.upload(client, path, None).digest


def load(ws: Workspace) -> ForgeConfig:
    """forge.yaml, validated, with a model to train: needs no daemon."""
    config = ws.config()
    if config is None:
        raise ForgeError(f'no forge.yaml in {ws.root}: run `forgectl plan "GOAL"` first')
    if not config.model:
        raise ForgeError('forge.yaml has no model: run `forgectl plan "GOAL"` or set `model:` by hand')
    return config


def job_spec(
    ws: Workspace, config: ForgeConfig, client: Client, notice: Callable[[str], None]
) -> jobs_pb2.JobSpec:
    prepared = load_prepared(ws)
    recorded_train = prepared.train_data if prepared and prepared.train_file == config.data.train else ""
    recorded_val = prepared.val_data if prepared and prepared.val_file == config.data.val else ""
    train = jobs_pb2.TrainSpec(
        model=config.model,
        goal=config.goal,
        export=config.training.export,
        train_data=_digest(ws, client, config.data.train, recorded_train, notice, required=True),
        val_data=_digest(ws, client, config.data.val, recorded_val, notice, required=False),
        gradient_checkpointing=bool(config.training.gradient_checkpointing),
        **config.training.hparams(),
    )
    plan = load_plan(ws)
    # The plan's memory estimate is only true of the settings it planned; after an edit, say "unknown" (0).
    memory = plan.memory_bytes if plan and plan.memory_inputs == memory_inputs(config) else 0
    name = output.short_name(config.goal) if config.goal else (ws.project.name if ws.project else "fine-tune")
    return jobs_pb2.JobSpec(
        name=name,
        train=train,
        project=ws.project.id if ws.project else "",
        brain=brain_access.choice(config.brain),
        memory_bytes=memory,
    )
