"""`forgectl prepare FILE "GOAL"`: the daemon's brain turns a raw file into chat/text JSONL; the results land
in data/ and the digests in .forge/prepared.json, so plan and train never upload the data again."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from forge.v1 import artifacts_pb2, brain_pb2
from google.protobuf import json_format
from rich.console import Console

from forgectl import brain_access, ignite, output
from forgectl.client import Client, ForgeError
from forgectl.project import (
    PREPARED_FILE,
    SCRIPT_FILE,
    TRAIN_FILE,
    VAL_FILE,
    PreparedRecord,
    Workspace,
    atomic_write,
    now,
    save_record,
    writing,
)


def file_digest(path: Path) -> str:
    """The daemon's artifact digest of a local file (its blob store is content-addressed by sha256)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def download(client: Client, digest: str, dest: Path) -> None:
    """Stream an artifact into `dest` atomically, checking it arrived whole."""
    with writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for part in client.artifacts.Download(artifacts_pb2.DownloadRequest(digest=digest), timeout=600):
                fh.write(part.chunk)
                h.update(part.chunk)
        if "sha256:" + h.hexdigest() != digest:
            raise ForgeError(f"download of {digest} was corrupted in transit: run prepare again")
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ForgeError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(
    ws: Workspace,
    client: Client,
    data: Path,
    goal: str,
    extra: list[Path],
    no_upload: bool,
    script: str,
    con: Console | None,
) -> tuple[brain_pb2.PrepareResponse, PreparedRecord]:
    config = ws.config()  # a broken forge.yaml stops us before anything is uploaded
    raw = ignite.upload(client, data, con)
    request = brain_pb2.PrepareRequest(
        data=raw.digest,
        goal=goal,
        no_upload=no_upload,
        script=script,
        side_files=ignite.side_files(client, extra),
    )
    if config is not None:
        request.brain.CopyFrom(brain_access.choice(config.brain))
        # Token counts in the stats are the planned model's when forge.yaml names one.
        request.model = config.model or ""
    resp = client.brain.Prepare(request)
    train_file = config.data.train if config else TRAIN_FILE
    val_path = config.data.val if config else VAL_FILE
    val_file = val_path if resp.val_data else ""
    download(client, resp.train_data, ws.path(train_file))
    if val_file:
        download(client, resp.val_data, ws.path(val_file))
    elif val_path:
        ws.path(val_path).unlink(missing_ok=True)  # an earlier prepare's split must not pass for this one's
    script_file = ""
    if resp.script:
        atomic_write(ws.path(SCRIPT_FILE), resp.script)
        script_file = SCRIPT_FILE
    record = PreparedRecord(
        source=str(data.resolve()),
        goal=goal,
        brain=resp.brain or "offline",
        train_data=resp.train_data,
        val_data=resp.val_data,
        train_file=train_file,
        val_file=val_file,
        script_file=script_file,
        stats=output.stats_to_dict(resp.stats),
        sent=list(resp.sent),
        notes=list(resp.notes),
        prepared_at=now(),
    )
    save_record(ws, PREPARED_FILE, record)
    return resp, record


def stats_of(record: PreparedRecord) -> brain_pb2.DatasetStats:
    return json_format.ParseDict(record.stats, brain_pb2.DatasetStats(), ignore_unknown_fields=True)
