"""`forgectl plan "GOAL"`: the brain plans from the prepared data's stats; forge.yaml is (re)written with the
reason for every value, the user's own choices marked as theirs."""

from __future__ import annotations

from forge.train_fields import HPARAM_FIELDS
from forge.v1 import brain_pb2

from forgectl import brain_access, ignite
from forgectl.client import Client, ForgeError
from forgectl.prepare import stats_of
from forgectl.project import (
    BRAIN_REASON,
    PLAN_FILE,
    DataSettings,
    ForgeConfig,
    PlanRecord,
    TrainingSettings,
    Workspace,
    atomic_write,
    hand_edits,
    load_plan,
    load_prepared,
    memory_inputs,
    now,
    planned_values,
    render_config,
    save_record,
)

# The command-line flag behind each overridable field, to tell the user which values are theirs.
FLAGS = {
    "model": "--model",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "micro_batch_size": "--batch-size",
}


def overridden(overrides: ignite.Overrides) -> list[str]:
    spec = overrides.to_spec()
    return [f for f in FLAGS if getattr(spec, f)]


def _config_key(field: str) -> str:
    return field if field in ("model", "goal") else f"training.{field}"


def run(
    ws: Workspace, client: Client, goal: str, overrides: ignite.Overrides
) -> tuple[brain_pb2.PlanResponse, ForgeConfig, PlanRecord]:
    prepared = load_prepared(ws)
    if prepared is None:
        raise ForgeError(f'nothing prepared in {ws.root}: run `forgectl prepare FILE "GOAL"` first')
    existing = ws.config()  # a hand-broken forge.yaml is reported, not silently replaced
    brain = existing.brain if existing else brain_access.settings("offline", None, None)
    wanted = overrides.to_spec()
    flags = {f: FLAGS[f] for f in overridden(overrides)}
    # What the user changed in forge.yaml since the last plan stays theirs; a flag on this command wins.
    for field, value in (hand_edits(existing, load_plan(ws)) if existing else {}).items():
        if field not in flags and value:
            setattr(wanted, field, value)
            flags[field] = "kept from forge.yaml"
    request = brain_pb2.PlanRequest(goal=goal, stats=stats_of(prepared), overrides=wanted)
    request.brain.CopyFrom(brain_access.choice(brain))
    planned = client.brain.Plan(request)
    spec = planned.spec
    kept = existing.training if existing else TrainingSettings()
    training = TrainingSettings(
        **{f: getattr(spec, f) for f in HPARAM_FIELDS if f != "method"},
        method=spec.method or "lora",  # type: ignore[arg-type]
        # Not the planner's to decide: forged's self-healing sets one, the user the other.
        gradient_checkpointing=kept.gradient_checkpointing,
        export=kept.export,
    )
    config = ForgeConfig(
        goal=goal,
        model=spec.model,
        brain=brain,
        data=DataSettings(train=prepared.train_file, val=prepared.val_file),
        training=training,
    )
    reasons = {"brain.kind": BRAIN_REASON[brain.kind]}
    for d in planned.decisions:
        if d.field in flags:
            # The planner says "set by you" or, when a safety rule changed the value, what it did.
            clamp = "" if d.reason == "set by you" else f"; {d.reason}"
            reasons[_config_key(d.field)] = f"yours ({flags[d.field]}){clamp}"
        else:
            reasons[_config_key(d.field)] = d.reason
    reasons["data.train"] = f"prepared by the {prepared.brain} brain from {prepared.source}"
    reasons["training.export"] = "after training: merge, write a GGUF, check it, register it with Ollama"
    when = now()
    note = f"Planned by the {planned.brain or 'offline'} brain on {when:%Y-%m-%d %H:%M} UTC."
    atomic_write(ws.config_path, render_config(config, reasons, note))
    record = PlanRecord(
        goal=goal,
        brain=planned.brain or "offline",
        memory_bytes=planned.memory_bytes,
        memory_inputs=memory_inputs(config),
        planned=planned_values(spec.model, training),
        overrides=list(flags),
        decisions=[{"field": d.field, "value": d.value, "reason": d.reason} for d in planned.decisions],
        planned_at=when,
    )
    save_record(ws, PLAN_FILE, record)
    return planned, config, record
