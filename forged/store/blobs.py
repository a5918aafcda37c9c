"""Content-addressed blob storage on disk (sha256), with ownership recorded in the database."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from forged.store.db import Database
from forged.store.models import Artifact, ArtifactOwner

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class BlobError(ValueError):
    pass


class BlobStore:
    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db
        # (digest, owner) pairs known readable. Blobs and ownership are never taken away (there is no
        # garbage collection yet; when there is, it must clear this), so a yes stays a yes.
        self._readable: set[tuple[str, str | None]] = set()
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise BlobError(f"malformed artifact digest {digest!r}: expected sha256:<64 hex digits>")
        hexd = digest.split(":", 1)[1]
        return self.root / "sha256" / hexd[:2] / hexd

    def put_stream(self, chunks: Iterable[bytes], owner: str, name: str, max_size: int) -> tuple[str, int]:
        """Write chunks to a temp file, hash as we go, then rename into place: never a half-written blob."""
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise BlobError(f"upload exceeds the {max_size // 2**20} MiB limit")
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + h.hexdigest()
            final = self.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._record(digest, size, owner, name)
        return digest, size

    def put_file(self, src: Path, owner: str, name: str) -> tuple[str, int]:
        with src.open("rb") as f:
            return self.put_stream(iter(lambda: f.read(1 << 20), b""), owner, name, max_size=1 << 62)

    def _record(self, digest: str, size: int, owner: str, name: str) -> None:
        with self.db.write() as s:
            if s.get(Artifact, digest) is None:
                s.add(Artifact(digest=digest, size=size, created_at=datetime.now(UTC)))
                s.flush()
            link = s.get(ArtifactOwner, (digest, owner))
            if link is None:
                s.add(ArtifactOwner(digest=digest, owner=owner, name=name))
            else:
                link.name = name

    def may_read(self, digest: str, owner: str | None) -> bool:
        """Whether the blob exists and `owner` may read it: asked on every Submit, so remembered."""
        if (digest, owner) in self._readable:
            return True
        if self.lookup(digest, owner) is None:
            return False
        self._readable.add((digest, owner))
        return True

    def lookup(self, digest: str, owner: str | None) -> tuple[int, str] | None:
        """(size, name) if the blob exists and `owner` may read it (None: any owner, for admins)."""
        self.path(digest)  # validates the form
        arts, links = Artifact.__table__.c, ArtifactOwner.__table__.c
        q = (
            select(arts.size, links.name)
            .join_from(Artifact.__table__, ArtifactOwner.__table__, arts.digest == links.digest)
            .where(arts.digest == digest)
            .limit(1)
        )
        if owner is not None:
            q = q.where(links.owner == owner)
        with self.db.connect() as c:
            row = c.execute(q).first()
        return (int(row.size), str(row.name)) if row is not None else None
