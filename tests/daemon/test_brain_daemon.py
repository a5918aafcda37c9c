"""The brain through a real forged: keys, CheckBrain, an LLM plan, and a failed job's diagnosis."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from fakes import gemini as G
from fakes.gemini import GeminiFake
from fakes.openai_compat import OpenAICompatFake
from fakes.openai_compat import text as local_text
from forge.v1 import brain_pb2, jobs_pb2
from harness import TERMINAL, Forged, forge_env, running_forged

GEMINI = jobs_pb2.BrainChoice(kind="gemini")
CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture
def gemini() -> Iterator[GeminiFake]:
    with GeminiFake() as fake:
        yield fake


def test_a_user_can_only_point_the_brain_at_endpoints_the_admin_allows(tmp_path: Path) -> None:
    """On a shared box a BrainChoice's endpoint would otherwise make forged send requests anywhere."""
    with OpenAICompatFake() as allowed, OpenAICompatFake() as other:
        env = forge_env(FORGE_ALLOW_BRAIN_ENDPOINTS=allowed.base_url)
        with running_forged(tmp_path / "state", env=env) as forged:
            allowed.answer(local_text('{"ok": true}'))
            choice = jobs_pb2.BrainChoice(kind="local", model="qwen2.5:7b", endpoint=allowed.base_url + "/")
            check = forged.brain.CheckBrain(brain_pb2.CheckBrainRequest(brain=choice), timeout=30)
            assert (check.ok, check.brain) == (True, "local") and len(allowed.received) == 1

            choice = jobs_pb2.BrainChoice(kind="local", model="qwen2.5:7b", endpoint=other.base_url)
            with pytest.raises(grpc.RpcError) as err:
                forged.brain.CheckBrain(brain_pb2.CheckBrainRequest(brain=choice), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "--allow-brain-endpoint" in (err.value.details() or "")
            assert other.received == []


def failing_job(forged: Forged, data: Path, brain: jobs_pb2.BrainChoice | None = None) -> jobs_pb2.Job:
    """Submits a job with a learning rate of 5 (meant: 5e-5): the runner rejects its spec before it
    loads anything, so the job fails within seconds."""
    train = jobs_pb2.TrainSpec(
        model="tiny", train_data=forged.upload(data), epochs=1, max_steps=2, micro_batch_size=1,
        grad_accum=1, learning_rate=5.0, lora_rank=8, lora_alpha=16, max_seq_len=128, seed=7,
        checkpoint_every=5, eval_every=10,
    )  # fmt: skip
    spec = jobs_pb2.JobSpec(name="bad rate", train=train)
    if brain is not None:
        spec.brain.CopyFrom(brain)
    return forged.submit(spec)


def forgectl(forged: Forged, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", forged.address, *args],
        env=forge_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_check_and_plan_through_the_daemon(tmp_path: Path, gemini: GeminiFake) -> None:
    with running_forged(tmp_path / "state", env=forge_env(FORGE_GEMINI_URL=gemini.url)) as forged:
        check = forged.brain.CheckBrain(brain_pb2.CheckBrainRequest(brain=GEMINI), timeout=30)
        assert not check.ok and "forgectl login" in check.message

        stored = forged.brain.SetBrainKey(brain_pb2.SetBrainKeyRequest(kind="gemini", key="AIza-daemon"))
        assert stored.stored
        key_files = list((tmp_path / "state" / "keys").iterdir())
        assert len(key_files) == 1 and stat.S_IMODE(key_files[0].stat().st_mode) == 0o600

        gemini.answer(G.text('{"ok": true}'))
        check = forged.brain.CheckBrain(brain_pb2.CheckBrainRequest(brain=GEMINI), timeout=30)
        assert (check.ok, check.brain) == (True, "gemini")
        assert gemini.received[0].headers["x-goog-api-key"] == "AIza-daemon"

        with pytest.raises(grpc.RpcError) as err:
            forged.brain.SetBrainKey(brain_pb2.SetBrainKeyRequest(kind="openai", key="k"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        picks = {
            "model": "qwen2.5-0.5b", "lora_rank": 8, "lora_alpha": 16, "learning_rate": 1e-4, "epochs": 2,
            "micro_batch_size": 4, "max_seq_len": 256,
        }  # fmt: skip
        gemini.answer(G.text(json.dumps({k: {"value": v, "reason": "fits"} for k, v in picks.items()})))
        stats = brain_pb2.DatasetStats(train_examples=200, val_examples=20, chars_p95=600, chars_max=900)
        request = brain_pb2.PlanRequest(
            goal="support bot", stats=stats, brain=GEMINI, overrides=jobs_pb2.TrainSpec(epochs=4)
        )
        plan = forged.brain.Plan(request, timeout=60)
        assert plan.brain == "gemini"
        assert (plan.spec.model, plan.spec.epochs, plan.spec.max_seq_len) == ("qwen2.5-0.5b", 4, 256)
        assert plan.memory_bytes > 0
        assert {d.field: d.reason for d in plan.decisions}["model"] == "gemini: fits"
        # The key never reaches a log.
        assert "AIza-daemon" not in (tmp_path / "state" / "forged.log").read_text()


def test_failed_jobs_are_diagnosed_offline_by_default_and_by_their_brain_when_chosen(
    tmp_path: Path, gemini: GeminiFake
) -> None:
    answer = G.text('{"cause": "The learning rate 5 is far too high.", "fix": "Set learning_rate to 5e-5."}')
    # Told apart by the model in the request path: the three jobs fail at about the same time.
    gemini.answer(by_path={"/gemini-answers:": answer, "/gemini-hangs:": G.hang(30)})
    env = forge_env(FORGE_GEMINI_URL=gemini.url, GEMINI_API_KEY="AIza-env")
    with running_forged(tmp_path / "state", "--max-jobs", "3", "--diagnosis-timeout", "3", env=env) as forged:
        data = tmp_path / "train.jsonl"
        data.write_text(CHAT * 4)
        jobs = [
            failing_job(forged, data, brain)
            for brain in (
                None,
                jobs_pb2.BrainChoice(kind="gemini", model="gemini-answers"),
                jobs_pb2.BrainChoice(kind="gemini", model="gemini-hangs"),
            )
        ]
        offline, diagnosed, hung = (forged.wait_until(j.id, lambda j: j.state in TERMINAL, 180) for j in jobs)

        assert offline.state == jobs_pb2.JOB_STATE_FAILED
        assert offline.diagnosis_brain == "offline"
        assert "forgectl plan" in offline.diagnosis and "learning_rate" in offline.error

        assert (diagnosed.diagnosis_brain, diagnosed.diagnosis) == (
            "gemini", "The learning rate 5 is far too high. Fix: Set learning_rate to 5e-5."
        )  # fmt: skip
        asked = [r for r in gemini.received if GeminiFake.model_of(r) == "gemini-answers"]
        assert len(asked) == 1 and "learning_rate" in GeminiFake.prompt_of(asked[0])
        # Only the two jobs that chose a brain asked one: without a choice nothing leaves the machine.
        assert {GeminiFake.model_of(r) for r in gemini.received} == {"gemini-answers", "gemini-hangs"}

        # A brain that hangs costs the job at most the diagnosis timeout, and the daemon stays healthy.
        assert hung.diagnosis_brain == "offline" and "forgectl plan" in hung.diagnosis
        assert hung.finished_at.ToDatetime() - hung.started_at.ToDatetime() < timedelta(seconds=30)
        assert forged.healthy()

        # The user sees it: in the job list, in status, and in the job's own log.
        listed = forgectl(forged, "jobs")
        assert listed.returncode == 0, listed.stderr
        assert f"{diagnosed.id}  diagnosis (gemini): The learning rate 5" in listed.stdout
        assert f"{offline.id}  diagnosis (offline): " in listed.stdout
        assert "diagnosis (gemini)" in forgectl(forged, "status").stdout
        logs = [e.log.message for e in forged.events(diagnosed.id) if e.WhichOneof("payload") == "log"]
        assert (
            "diagnosis (gemini): The learning rate 5 is far too high. Fix: Set learning_rate to 5e-5." in logs
        )


BROKEN_SCRIPT = "raise SystemExit(1 / 0)\n"


def test_prepare_with_gemini_redacts_what_it_sends_and_repairs_a_failing_script(
    tmp_path: Path, gemini: GeminiFake
) -> None:
    """The LLM path of prepare end to end: forged sends a redacted sample to Gemini (the wire format's
    fake), runs the script it answers with in the sandbox, sends the failure back, and uses the repair."""
    data = tmp_path / "tickets.csv"
    rows = [f"user{i}@example.com,My order {i} is late,Sent a new one ({i})" for i in range(30)]
    data.write_text("Customer Email,Ticket Description,Resolution\n" + "\n".join(rows) + "\n")
    mapping = {"layout": "flat", "prompt": "Ticket Description", "response": "Resolution"}
    gemini.answer(
        G.text(json.dumps({"mapping": mapping, "script": BROKEN_SCRIPT})),
        G.text("```json\n" + json.dumps({"mapping": mapping, "explanation": "template"}) + "\n```"),
    )
    with running_forged(tmp_path / "state", env=forge_env(FORGE_GEMINI_URL=gemini.url)) as forged:
        forged.brain.SetBrainKey(brain_pb2.SetBrainKeyRequest(kind="gemini", key="AIza-daemon"))
        request = brain_pb2.PrepareRequest(data=forged.upload(data), goal="answer tickets", brain=GEMINI)
        done = forged.brain.Prepare(request, timeout=120)

        assert (done.brain, done.repairs) == ("gemini", 1)
        assert done.stats.train_examples + done.stats.val_examples == 30
        asked = [json.dumps(r.body) for r in gemini.received]
        assert len(asked) == 2 and "ZeroDivisionError" in asked[1], "the failure went back to the brain"
        assert done.sent and all("@example.com" not in s for s in done.sent), "samples leave redacted"
        assert any("<EMAIL>" in s for s in done.sent)
        assert all("@example.com" not in body for body in asked), "what was sent is what the fake received"

        no_upload = brain_pb2.PrepareRequest(
            data=request.data, goal="answer tickets", brain=GEMINI, no_upload=True
        )
        gemini.answer(G.text(json.dumps({"mapping": mapping})))
        quiet = forged.brain.Prepare(no_upload, timeout=120)
        assert quiet.brain == "gemini"
        assert "My order" not in json.dumps(gemini.received[-1].body), "no_upload sends no rows at all"
