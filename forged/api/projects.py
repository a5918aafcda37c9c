"""forge.v1.Projects: a user's projects (forgectl init registers one; its jobs carry the id)."""

from __future__ import annotations

import grpc
from forge.v1 import projects_pb2, projects_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, unary
from forged.store.projects import MAX_NAME, ProjectNotFound, ProjectRecord, ProjectStore
from forged.store.users import Principal


def project_to_pb(record: ProjectRecord) -> projects_pb2.Project:
    pb = projects_pb2.Project(id=record.id, name=record.name, owner=record.owner)
    pb.created_at.FromDatetime(record.created_at)
    return pb


def find_owned(store: ProjectStore, project_id: str, who: Principal) -> ProjectRecord:
    """The caller's project (any, for an admin); another user's reads as missing, so ids do not leak."""
    try:
        return store.get(project_id, None if who.admin else who.name)
    except ProjectNotFound:
        raise ApiError(
            grpc.StatusCode.NOT_FOUND,
            f"no project {project_id!r} of yours on this forged: was it created with another daemon? "
            "(`forgectl init` in a new directory makes one here)",
        ) from None


class ProjectsService(projects_pb2_grpc.ProjectsServicer):
    def __init__(self, store: ProjectStore, auth: Authenticator) -> None:
        self.store = store
        self.auth = auth

    @unary
    def Create(
        self, request: projects_pb2.CreateProjectRequest, context: grpc.ServicerContext
    ) -> projects_pb2.Project:
        who = self.auth.principal(context)
        name = " ".join(request.name.split())
        if not name:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "a project needs a name (its directory's name)")
        if len(name) > MAX_NAME:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"project name is {len(name)} characters; at most {MAX_NAME}",
            )
        return project_to_pb(self.store.create(who.name, name))

    @unary
    def Get(
        self, request: projects_pb2.GetProjectRequest, context: grpc.ServicerContext
    ) -> projects_pb2.Project:
        who = self.auth.principal(context)
        if not request.id:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "no project id given")
        return project_to_pb(find_owned(self.store, request.id, who))
