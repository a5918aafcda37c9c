"""forge.v1.Hardware: what forged can schedule on."""

from __future__ import annotations

from dataclasses import asdict

import grpc
from forge.v1 import hardware_pb2, hardware_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.errors import unary
from forged.hardware.nvml import CachedProbe


class HardwareService(hardware_pb2_grpc.HardwareServicer):
    def __init__(self, probe: CachedProbe, auth: Authenticator) -> None:
        self.probe = probe
        self.auth = auth

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
