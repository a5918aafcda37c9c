"""Job, event and plan conversions from real forge.v1 messages, and the small formatters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from forge.v1 import brain_pb2, hardware_pb2, jobs_pb2
from rich.console import Console

from forgectl import output


def _job() -> jobs_pb2.Job:
    job = jobs_pb2.Job(
        id="j-abc123",
        owner="ada",
        name="customer-support-bot",
        state=jobs_pb2.JOB_STATE_SUCCEEDED,
        artifacts={"adapter": "/w/output/adapter"},
    )
    job.metrics.first_loss = 2.5
    job.metrics.final_loss = 0.25
    job.metrics.steps = 20
    job.metrics.total_steps = 20
    job.created_at.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    job.started_at.FromDatetime(datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC))
    job.finished_at.FromDatetime(datetime(2025, 1, 2, 3, 6, 6, tzinfo=UTC))
    attempt = job.attempts.add(number=1, outcome="succeeded")
    attempt.started_at.FromDatetime(datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC))
    return job


def test_job_to_dict_shape() -> None:
    d = output.job_to_dict(_job())
    assert d["id"] == "j-abc123"
    assert d["state"] == "succeeded"
    assert d["name"] == "customer-support-bot"
    assert d["owner"] == "ada"
    assert d["metrics"] == {
        "first_loss": 2.5,
        "final_loss": 0.25,
        "steps": 20,
        "total_steps": 20,
        "first_val_loss": None,  # never set: proto3 optional, so null rather than 0.0
        "final_val_loss": None,
        "tokens_per_second": None,
    }
    assert d["artifacts"] == {"adapter": "/w/output/adapter"}
    assert d["error"] is None
    assert d["attempts"][0]["number"] == 1
    assert d["attempts"][0]["ended_at"] is None
    assert d["created_at"] == "2025-01-02T03:04:05Z"
    assert d["finished_at"] == "2025-01-02T03:06:06Z"
    json.dumps(d)  # every value is plain JSON


def test_zero_loss_is_not_missing() -> None:
    job = jobs_pb2.Job(id="j", state=jobs_pb2.JOB_STATE_RUNNING)
    job.metrics.final_loss = 0.0
    assert output.job_to_dict(job)["metrics"]["final_loss"] == 0.0
    assert output.job_to_dict(job)["metrics"]["first_loss"] is None


def test_state_names_are_lowercase() -> None:
    assert [output.state_name(s) for s in range(6)] == [
        "unspecified",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert output.state_name(99) == "unspecified"


def test_to_plain_keeps_64_bit_ints_as_numbers() -> None:
    stats = brain_pb2.DatasetStats(rows_in=120, train_examples=100, dropped=2, dropped_reasons={"empty": 2})
    d = output.to_plain(stats)
    assert d["rows_in"] == 120
    assert d["dropped_reasons"] == {"empty": 2}
    probe = hardware_pb2.ProbeResponse(message="no NVIDIA GPU found", memory_total_bytes=1 << 40)
    assert output.to_plain(probe)["memory_total_bytes"] == 1 << 40
    assert output.to_plain(probe)["gpus"] == []


def test_event_to_dict_follows_the_runner_protocol_shape() -> None:
    ev = jobs_pb2.JobEvent(job_id="j", seq=7, step=jobs_pb2.StepEvent(step=5, total_steps=20, loss=1.5))
    d = output.event_to_dict(ev)
    assert d["seq"] == 7
    assert d["step"]["step"] == 5 and d["step"]["loss"] == 1.5
    state = jobs_pb2.JobEvent(seq=8, state=jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_RUNNING, attempt=2))
    assert output.event_to_dict(state)["state"] == {"state": "running", "reason": "", "attempt": 2}


def test_plan_to_dict() -> None:
    prepared = brain_pb2.PrepareResponse(
        train_data="sha256:a", stats=brain_pb2.DatasetStats(rows_in=3), brain="offline"
    )
    plan = brain_pb2.PlanResponse(
        spec=jobs_pb2.TrainSpec(model="tiny", epochs=3, seed=42),
        decisions=[brain_pb2.PlanDecision(field="epochs", value="3", reason="small data")],
        brain="offline",
    )
    d = output.plan_to_dict(prepared, plan, plan.spec)
    assert d["plan"]["model"] == "tiny" and d["plan"]["seed"] == 42
    assert d["decisions"] == [{"field": "epochs", "value": "3", "reason": "small data"}]
    assert d["stats"]["rows_in"] == 3


def test_short_name() -> None:
    assert output.short_name("Customer support bot!") == "customer-support-bot"
    assert output.short_name("  ") == "fine-tune"
    assert len(output.short_name("word " * 40)) <= 40
    assert output.short_name("x" * 100) == "x" * 40


def test_formatters() -> None:
    assert output.fmt_duration(41) == "41s"
    assert output.fmt_duration(125) == "2m05s"
    assert output.fmt_duration(3700) == "1h01m"
    assert output.fmt_duration(None) == "-"
    assert output.fmt_duration(float("nan")) == "-"
    assert output.fmt_loss(2.31049) == "2.310"
    assert output.fmt_loss(None) == "-"
    assert output.fmt_bytes(80 * (1 << 30)) == "80.0 GiB"
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert output.fmt_ago(now - timedelta(minutes=3), now) == "3m ago"
    assert output.fmt_ago(None, now) == "-"


def test_prepare_summary_mentions_what_matters() -> None:
    resp = brain_pb2.PrepareResponse(
        stats=brain_pb2.DatasetStats(
            rows_in=120,
            train_examples=100,
            val_examples=12,
            dropped=8,
            dropped_reasons={"empty output": 5, "duplicate": 3},
            layout="instruction/output",
            source_format="csv",
        ),
        brain="offline",
    )
    text = output.prepare_summary(resp)
    for part in (
        "120 rows",
        "csv",
        "instruction/output",
        "100 training",
        "12 validation",
        "dropped 8",
        "5 empty output",
        "3 duplicate",
        "offline brain",
    ):
        assert part in text


def _render(renderables: list[object]) -> str:
    con = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for r in renderables:
        con.print(r)
    return con.export_text()


def test_summary_lines_for_success_and_failure() -> None:
    text = _render(output.job_summary_lines(_job()))
    assert "succeeded" in text and "2.500 → 0.250" in text and "/w/output/adapter" in text
    assert "forgectl logs j-abc123" in text
    failed = jobs_pb2.Job(id="j-f", state=jobs_pb2.JOB_STATE_FAILED, error="loss became NaN")
    text = _render(output.job_summary_lines(failed))
    assert "failed" in text and "loss became NaN" in text


def test_tables_render() -> None:
    text = _render([output.jobs_table([_job()])])
    assert "j-abc123" in text and "20/20" in text
    probe = hardware_pb2.ProbeResponse(
        gpus=[hardware_pb2.Gpu(index=0, name="NVIDIA H100", memory_total_bytes=80 << 30)],
        driver_version="550.1",
    )
    assert "NVIDIA H100" in _render([output.gpus_table(probe)])
    busy = hardware_pb2.Gpu(
        index=1,
        name="NVIDIA H100",
        memory_total_bytes=80 << 30,
        memory_free_bytes=60 << 30,
        utilization_percent=37,
    )
    line = output.hardware_line(hardware_pb2.ProbeResponse(gpus=[busy], cpu_count=32))
    assert line.startswith("GPU 1 NVIDIA H100: 60") and "free of 80" in line and "37% busy" in line
    assert output.hardware_line(
        hardware_pb2.ProbeResponse(message="no NVIDIA GPU found", cpu_count=2)
    ).startswith("no NVIDIA GPU found")
