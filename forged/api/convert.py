"""Store records to protobuf messages."""

from __future__ import annotations

from datetime import datetime

from forge.v1 import jobs_pb2
from google.protobuf import json_format

from forged.store.jobs import STATE_TO_PB, JobRecord

_METRIC_FIELDS = ("first_loss", "final_loss", "first_val_loss", "final_val_loss", "tokens_per_second")


def _ts(msg, value: datetime | None) -> None:  # type: ignore[no-untyped-def]
    if value is not None:
        msg.FromDatetime(value)


def spec_to_dict(spec: jobs_pb2.JobSpec) -> dict:
    return json_format.MessageToDict(
        spec, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def job_to_pb(job: JobRecord, queue_position: int = 0, wait_reason: str = "") -> jobs_pb2.Job:
    pb = jobs_pb2.Job(
        id=job.id,
        owner=job.owner,
        name=job.name,
        state=STATE_TO_PB[job.state],
        request_id=job.request_id,
        artifacts=job.artifacts,
        error=job.error,
        last_seq=job.last_seq,
        queue_position=queue_position,
        wait_reason=wait_reason,
        workspace=job.workspace,
        diagnosis=job.diagnosis,
        diagnosis_brain=job.diagnosis_brain,
        gpu_indices=job.gpu_indices,
        host=job.host,  # set only while running
    )
    json_format.ParseDict(job.spec, pb.spec, ignore_unknown_fields=True)
    _ts(pb.created_at, job.created_at)
    _ts(pb.started_at, job.started_at)
    _ts(pb.finished_at, job.finished_at)
    m = job.metrics
    for name in _METRIC_FIELDS:
        if m.get(name) is not None:
            setattr(pb.metrics, name, float(m[name]))
    pb.metrics.steps = int(m.get("steps", 0))
    pb.metrics.total_steps = int(m.get("total_steps", 0))
    for a in job.attempts:
        at = pb.attempts.add(
            number=a.number, outcome=a.outcome, reason=a.reason, resumed_from_step=a.resumed_from_step
        )
        _ts(at.started_at, a.started_at)
        _ts(at.ended_at, a.ended_at)
    return pb
