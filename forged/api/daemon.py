"""forge.v1.Daemon: who and what this forged is."""

from __future__ import annotations

import os
from datetime import datetime

import grpc
from forge.v1 import daemon_pb2, daemon_pb2_grpc

from forged import __version__
from forged.api.auth import Authenticator
from forged.api.errors import unary
from forged.store.jobs import QUEUED, RUNNING, JobStore


class DaemonService(daemon_pb2_grpc.DaemonServicer):
    def __init__(
        self, store: JobStore, auth: Authenticator, started_at: datetime, state_dir: str, database: str
    ) -> None:
        self.store = store
        self.auth = auth
        self.started_at = started_at
        self.state_dir = state_dir
        self.database = database

    @unary
    def Status(
        self, request: daemon_pb2.DaemonStatusRequest, context: grpc.ServicerContext
    ) -> daemon_pb2.DaemonStatus:
        who = self.auth.principal(context)
        counts = self.store.counts()
        status = daemon_pb2.DaemonStatus(
            version=__version__,
            user=who.name,
            admin=who.admin,
            auth=self.auth.mode,
            database=self.database,
            queued=counts.get(QUEUED, 0),
            running=counts.get(RUNNING, 0),
            state_dir=self.state_dir,
            pid=os.getpid(),
        )
        status.started_at.FromDatetime(self.started_at)
        return status
