"""forge.v1.Brain: raw data file + goal -> prepared chat data and a training plan."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
from forge.train_fields import OVERRIDABLE_FIELDS
from forge.v1 import brain_pb2, brain_pb2_grpc
from google.protobuf import json_format

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, unary
from forged.brain import histogram, ingest, planner, study
from forged.hardware.nvml import CachedProbe
from forged.store.blobs import BlobStore


class BrainService(brain_pb2_grpc.BrainServicer):
    def __init__(self, blobs: BlobStore, auth: Authenticator, scratch: Path, hardware: CachedProbe) -> None:
        self.blobs = blobs
        self.auth = auth
        self.scratch = scratch
        self.hardware = hardware  # the planner picks QLoRA only where jobs run on an NVIDIA GPU

    @unary
    def Study(
        self, request: brain_pb2.StudyRequest, context: grpc.ServicerContext
    ) -> brain_pb2.StudyResponse:
        who = self.auth.principal(context)
        found = self.blobs.lookup(request.data, None if who.admin else who.name)
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no uploaded data {request.data}: upload it first")
        _, name = found
        report = study.study(self.blobs.path(request.data), name, goal=request.goal, model=request.model)
        png = histogram.render_png(report.tokens, f"token lengths of {name}")
        return brain_pb2.StudyResponse(report_json=report.model_dump_json(), length_histogram_png=png)

    @unary
    def Prepare(
        self, request: brain_pb2.PrepareRequest, context: grpc.ServicerContext
    ) -> brain_pb2.PrepareResponse:
        who = self.auth.principal(context)
        found = self.blobs.lookup(request.data, None if who.admin else who.name)
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no uploaded data {request.data}: upload it first")
        _, name = found
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            prepared = ingest.prepare(
                self.blobs.path(request.data),
                name,
                Path(tmp),
                seed=request.seed or 42,
                val_fraction=request.val_fraction or 0.1,
            )
            train, _ = self.blobs.put_file(prepared.train_data, who.name, f"{name}.train.jsonl")
            val = ""
            if prepared.stats.val_examples:
                val, _ = self.blobs.put_file(prepared.val_data, who.name, f"{name}.val.jsonl")
        stats = brain_pb2.DatasetStats()
        json_format.ParseDict(prepared.stats.model_dump(), stats, ignore_unknown_fields=True)
        return brain_pb2.PrepareResponse(train_data=train, val_data=val, stats=stats, brain="offline")

    @unary
    def Plan(self, request: brain_pb2.PlanRequest, context: grpc.ServicerContext) -> brain_pb2.PlanResponse:
        self.auth.principal(context)
        given = request.overrides
        overrides = {f: getattr(given, f) for f in OVERRIDABLE_FIELDS if getattr(given, f)}
        stats = json_format.MessageToDict(
            request.stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        cuda = bool(self.hardware.get().gpus)
        result = planner.plan(request.goal, stats, overrides, overrides.get("model"), cuda=cuda)
        resp = brain_pb2.PlanResponse(brain=result.brain)
        json_format.ParseDict(result.spec, resp.spec, ignore_unknown_fields=True)
        resp.spec.goal = request.goal
        for d in result.decisions:
            resp.decisions.add(field=d.field, value=str(d.value), reason=d.reason)
        return resp
