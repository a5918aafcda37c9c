"""Projects: a user's named group of data, plan and jobs (what `forgectl init` registers)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select

from forged.store.db import Database
from forged.store.models import Project

MAX_NAME = 200
_PROJECTS = Project.__table__


class ProjectNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ProjectRecord:
    id: str
    owner: str
    name: str
    created_at: datetime


def new_project_id() -> str:
    return "p-" + secrets.token_hex(5)


class ProjectStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, owner: str, name: str) -> ProjectRecord:
        record = ProjectRecord(new_project_id(), owner, name, datetime.now(UTC))
        with self.db.write_core() as c:
            c.execute(insert(_PROJECTS).values(**vars(record)))
        return record

    def get(self, project_id: str, owner: str | None) -> ProjectRecord:
        """`owner` None means any owner (admins); another user's project reads as missing."""
        q = select(_PROJECTS).where(_PROJECTS.c.id == project_id)
        if owner is not None:
            q = q.where(_PROJECTS.c.owner == owner)
        with self.db.connect() as c:
            row = c.execute(q).first()
        if row is None:
            raise ProjectNotFound(project_id)
        created = row.created_at
        # SQLite hands back naive datetimes (stored as UTC).
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        return ProjectRecord(row.id, row.owner, row.name, created)
