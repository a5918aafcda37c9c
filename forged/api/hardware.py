"""forge.v1.Hardware: what forged can schedule on."""

from __future__ import annotations

from dataclasses import asdict

import grpc
from forge.v1 import hardware_pb2, hardware_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, unary
from forged.executors.base import ExecutorError
from forged.executors.docker import DockerExecutor
from forged.hardware.nvml import CachedProbe


class HardwareService(hardware_pb2_grpc.HardwareServicer):
    def __init__(self, probe: CachedProbe, auth: Authenticator, docker: DockerExecutor | None = None) -> None:
        self.probe = probe
        self.auth = auth
        self.docker = docker  # None: forged runs jobs as local processes and has no images to probe

    @unary
    def Probe(
        self, request: hardware_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> hardware_pb2.ProbeResponse:
        self.auth.principal(context)
        inv = self.probe.get()
        return hardware_pb2.ProbeResponse(
            gpus=[hardware_pb2.Gpu(**asdict(g)) for g in inv.gpus],
            driver_version=inv.driver_version,
            cuda_driver_version=inv.cuda_driver_version,
            message=inv.message,
            cpu_count=inv.cpu_count,
            memory_total_bytes=inv.memory_total_bytes,
        )

    @unary
    def ProbeImage(
        self, request: hardware_pb2.ProbeImageRequest, context: grpc.ServicerContext
    ) -> hardware_pb2.ProbeImageResponse:
        self.auth.principal(context)
        if self.docker is None:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "forged runs jobs as local processes: start it with --executor docker to use runner images",
            )
        try:
            found = self.docker.probe(request.arch)
        except ExecutorError as exc:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        return hardware_pb2.ProbeImageResponse(
            image=found.image,
            arch=found.choice.arch,
            ok=found.ok,
            reason=found.reason,
            report_json=found.report_json,
            note=found.choice.note,
        )
