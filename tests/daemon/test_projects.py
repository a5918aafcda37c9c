"""Projects through a real forged in shared-box mode: per-user like jobs, and a project's jobs list apart."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from forge.v1 import jobs_pb2, projects_pb2, projects_pb2_grpc
from harness import EXAMPLE_CSV, bearer, create_token, running_forged


def test_projects_are_per_user_and_list_only_their_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    alice, bob = bearer(create_token(state, "alice")), bearer(create_token(state, "bob"))
    # No job slots: the jobs stay queued, so this test never starts a runner.
    with running_forged(state, "--auth", "token", "--max-jobs", "0") as d:
        projects = projects_pb2_grpc.ProjectsStub(d.channel)
        made = projects.Create(projects_pb2.CreateProjectRequest(name="  support   bot "), metadata=alice)
        assert made.id.startswith("p-") and made.name == "support bot" and made.owner == "alice"
        assert made.created_at.seconds > 0
        again = projects.Get(projects_pb2.GetProjectRequest(id=made.id), metadata=alice)
        assert again == made

        with pytest.raises(grpc.RpcError) as theirs:
            projects.Get(projects_pb2.GetProjectRequest(id=made.id), metadata=bob)
        assert theirs.value.code() == grpc.StatusCode.NOT_FOUND, "another user's project reads as missing"
        with pytest.raises(grpc.RpcError) as unnamed:
            projects.Create(projects_pb2.CreateProjectRequest(name=" "), metadata=alice)
        assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        d.metadata = alice
        spec = d.train_spec(EXAMPLE_CSV, max_steps=2)
        loose = d.submit(spec)
        spec.project = made.id
        in_project = d.submit(spec)
        assert in_project.spec.project == made.id

        def listed(project: str) -> list[str]:
            reply = d.jobs.List(jobs_pb2.ListJobsRequest(project=project), metadata=alice, timeout=10)
            return [j.id for j in reply.jobs]

        assert listed(made.id) == [in_project.id]
        assert listed("") == [in_project.id, loose.id], "no project given: every job, newest first"
        assert listed("p-0000000000") == []

        d.metadata = bob
        bob_spec = d.train_spec(EXAMPLE_CSV, max_steps=2)
        bob_spec.project = made.id
        with pytest.raises(grpc.RpcError) as borrowed:
            d.submit(bob_spec)
        assert borrowed.value.code() == grpc.StatusCode.NOT_FOUND, "a job cannot join someone else's project"
        assert f"no project '{made.id}' of yours" in (borrowed.value.details() or "")
