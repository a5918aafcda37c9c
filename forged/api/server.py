"""Builds the gRPC server: one service per concern, plus standard health and reflection."""

from __future__ import annotations

from concurrent import futures

import grpc
from forge.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    brain_pb2,
    brain_pb2_grpc,
    daemon_pb2,
    daemon_pb2_grpc,
    hardware_pb2,
    hardware_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    projects_pb2,
    projects_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from forged.api.artifacts import ArtifactsService
from forged.api.auth import Authenticator, AuthInterceptor
from forged.api.brain import BrainService
from forged.api.daemon import DaemonService
from forged.api.hardware import HardwareService
from forged.api.jobs import JobsService
from forged.api.projects import ProjectsService

SERVICE_NAMES = (
    jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["Artifacts"].full_name,
    hardware_pb2.DESCRIPTOR.services_by_name["Hardware"].full_name,
    brain_pb2.DESCRIPTOR.services_by_name["Brain"].full_name,
    daemon_pb2.DESCRIPTOR.services_by_name["Daemon"].full_name,
    projects_pb2.DESCRIPTOR.services_by_name["Projects"].full_name,
)


def build_server(
    auth: Authenticator,
    jobs: JobsService,
    artifacts: ArtifactsService,
    hardware: HardwareService,
    brain: BrainService,
    daemon: DaemonService,
    threads: int,
    projects: ProjectsService,
) -> tuple[grpc.Server, health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
        interceptors=[AuthInterceptor(auth)],
        # Watch streams hold a thread each; past this many, new calls get RESOURCE_EXHAUSTED, not a hang.
        maximum_concurrent_rpcs=threads,
        options=[
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    jobs_pb2_grpc.add_JobsServicer_to_server(jobs, server)
    artifacts_pb2_grpc.add_ArtifactsServicer_to_server(artifacts, server)
    hardware_pb2_grpc.add_HardwareServicer_to_server(hardware, server)
    brain_pb2_grpc.add_BrainServicer_to_server(brain, server)
    daemon_pb2_grpc.add_DaemonServicer_to_server(daemon, server)
    projects_pb2_grpc.add_ProjectsServicer_to_server(projects, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (*SERVICE_NAMES, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer
