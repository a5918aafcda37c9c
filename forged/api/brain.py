"""forge.v1.Brain: raw data file + goal -> prepared chat data and a training plan."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
from forge.train_fields import OVERRIDABLE_FIELDS
from forge.v1 import brain_pb2, brain_pb2_grpc, jobs_pb2
from google.protobuf import json_format

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, unary
from forged.brain import histogram, ingest, planner, study
from forged.brain.scripting import Brain
from forged.hardware.nvml import CachedProbe
from forged.store.blobs import BlobStore


class BrainService(brain_pb2_grpc.BrainServicer):
    def __init__(
        self,
        blobs: BlobStore,
        auth: Authenticator,
        scratch: Path,
        hardware: CachedProbe,
        brains: Callable[[jobs_pb2.BrainChoice, str], Brain] | None = None,
    ) -> None:
        self.blobs = blobs
        self.brains = brains  # builds the LLM brain a request names, for its user
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
        side_files = {}
        for side in request.side_files:
            if self.blobs.lookup(side.data, None if who.admin else who.name) is None:
                raise ApiError(
                    grpc.StatusCode.NOT_FOUND, f"no uploaded side file {side.name}: upload it first"
                )
            side_files[side.name] = self.blobs.path(side.data)
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            prepared = ingest.prepare(
                self.blobs.path(request.data),
                name,
                Path(tmp),
                seed=request.seed or 42,
                val_fraction=request.val_fraction or 0.1,
                goal=request.goal,
                brain=self._brain(request.brain, who.name),
                no_upload=request.no_upload,
                script=request.script,
                side_files=side_files,
                max_seq_len=request.max_seq_len,
            )
            train, _ = self.blobs.put_file(prepared.train_data, who.name, f"{name}.train.jsonl")
            val = ""
            if prepared.stats.val_examples:
                val, _ = self.blobs.put_file(prepared.val_data, who.name, f"{name}.val.jsonl")
        stats = brain_pb2.DatasetStats()
        json_format.ParseDict(prepared.stats.model_dump(), stats, ignore_unknown_fields=True)
        return brain_pb2.PrepareResponse(
            train_data=train,
            val_data=val,
            stats=stats,
            brain=prepared.brain,
            script=prepared.script,
            mapping_json=prepared.mapping_json,
            sent=prepared.sent,
            notes=prepared.notes,
            repairs=prepared.repairs,
        )

    def _brain(self, choice: jobs_pb2.BrainChoice, user: str) -> Brain | None:
        """None is the offline rules; an LLM brain comes from the selector forged/brain/llm/ provides."""
        if choice.kind in ("", "offline"):
            return None
        if self.brains is None:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the {choice.kind} brain is not available in this forged: use --brain offline",
            )
        return self.brains(choice, user)

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
