"""forge.v1.Hardware: what forged can schedule on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import grpc
from forge.v1 import hardware_pb2, hardware_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, streaming, unary
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

    def _docker(self) -> DockerExecutor:
        if self.docker is None:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "forged runs jobs as local processes: start it with --executor docker to use runner images",
            )
        return self.docker

    @streaming
    def BuildImage(
        self, request: hardware_pb2.BuildImageRequest, context: grpc.ServicerContext
    ) -> Iterator[hardware_pb2.BuildImageEvent]:
        if not self.auth.principal(context).admin:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "building runner images changes them for everyone on this machine: ask an admin",
            )
        try:
            tag, lines = self._docker().build(
                request.arch, dry_run=request.dry_run, base=request.base, wheelhouse=request.wheelhouse
            )
        except ExecutorError as exc:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        code = 0
        try:
            for line in lines:
                yield hardware_pb2.BuildImageEvent(line=line, image=tag)
        except ExecutorError as exc:
            # The builder's own reason, as the last line of the output the client has been reading.
            code = 1
            yield hardware_pb2.BuildImageEvent(line=f"error: {exc}", image=tag)
        yield hardware_pb2.BuildImageEvent(done=True, exit_code=code, image=tag)

    @unary
    def ProbeImage(
        self, request: hardware_pb2.ProbeImageRequest, context: grpc.ServicerContext
    ) -> hardware_pb2.ProbeImageResponse:
        self.auth.principal(context)
        try:
            found = self._docker().probe(request.arch)
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
