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
from forged.brain import histogram, ingest, llm_plan, study
from forged.brain.llm.base import BrainUnavailable, LLMBrain
from forged.brain.llm.keys import KeyStore
from forged.brain.llm.select import BrainSelector
from forged.hardware.nvml import CachedProbe
from forged.store.blobs import BlobStore
from forged.store.users import Principal


class BrainService(brain_pb2_grpc.BrainServicer):
    def __init__(
        self,
        blobs: BlobStore,
        auth: Authenticator,
        scratch: Path,
        hardware: CachedProbe,
        brains: BrainSelector | None = None,
    ) -> None:
        self.blobs = blobs
        self.auth = auth
        self.scratch = scratch
        self.hardware = hardware  # the planner picks QLoRA only where jobs run on an NVIDIA GPU
        # Which LLM (if any) answers, with whose key; without one, only the offline rules and keys in scratch.
        self.brains = brains or BrainSelector(KeyStore(scratch / "keys"))

    @unary
    def Study(
        self, request: brain_pb2.StudyRequest, context: grpc.ServicerContext
    ) -> brain_pb2.StudyResponse:
        who = self.auth.principal(context)
        name = self._uploaded(request.data, who, "data")
        report = study.study(self.blobs.path(request.data), name, goal=request.goal, model=request.model)
        png = histogram.render_png(report.tokens, f"token lengths of {name}")
        return brain_pb2.StudyResponse(report_json=report.model_dump_json(), length_histogram_png=png)

    @unary
    def Prepare(
        self, request: brain_pb2.PrepareRequest, context: grpc.ServicerContext
    ) -> brain_pb2.PrepareResponse:
        who = self.auth.principal(context)
        name = self._uploaded(request.data, who, "data")
        side_files = {}
        for side in request.side_files:
            self._uploaded(side.data, who, f"side file {side.name}")
            side_files[side.name] = self.blobs.path(side.data)
        brain, unavailable = self._brain(request, who.name)
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            prepared = ingest.prepare(
                self.blobs.path(request.data),
                name,
                Path(tmp),
                seed=request.seed or 42,
                val_fraction=request.val_fraction or 0.1,
                goal=request.goal,
                brain=brain,
                no_upload=request.no_upload,
                script=request.script,
                side_files=side_files,
                max_seq_len=request.max_seq_len,
                model=request.model,
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
            notes=[*unavailable, *prepared.notes],
            repairs=prepared.repairs,
        )

    def _uploaded(self, digest: str, who: Principal, what: str) -> str:
        """The name an upload was given, if `who` may read it (admins read every user's)."""
        found = self.blobs.lookup(digest, None if who.admin else who.name)
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no uploaded {what} {digest}: upload it first")
        return found[1]

    def _brain(self, request: brain_pb2.PrepareRequest, user: str) -> tuple[LLMBrain | None, list[str]]:
        """The LLM brain the request (or forged's default) names; None is the offline rules, which also
        answer, with a note saying why, when that brain cannot be reached."""
        try:
            return self.brains.brain_for(request.brain if request.HasField("brain") else None, user), []
        except BrainUnavailable as exc:
            return None, [f"the offline rules prepared the data: {exc}"]

    @unary
    def Plan(self, request: brain_pb2.PlanRequest, context: grpc.ServicerContext) -> brain_pb2.PlanResponse:
        who = self.auth.principal(context)
        given = request.overrides
        overrides = {f: getattr(given, f) for f in OVERRIDABLE_FIELDS if getattr(given, f)}
        stats = json_format.MessageToDict(
            request.stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        gpus = self.hardware.get().gpus
        # The GPU a job would get: the one with the most free memory (a multi-GPU plan is per GPU too).
        room = llm_plan.GpuRoom(max((g.memory_free_bytes for g in gpus), default=None), cuda=bool(gpus))
        brain, unavailable = None, ""
        try:
            brain = self.brains.brain_for(request.brain if request.HasField("brain") else None, who.name)
        except BrainUnavailable as exc:
            unavailable = str(exc)
        result = llm_plan.plan(request.goal, stats, overrides, brain, room, unavailable)
        resp = brain_pb2.PlanResponse(brain=result.brain, memory_bytes=result.memory_bytes)
        json_format.ParseDict(result.spec, resp.spec, ignore_unknown_fields=True)
        resp.spec.goal = request.goal
        for d in result.decisions:
            resp.decisions.add(field=d.field, value=str(d.value), reason=d.reason)
        return resp

    @unary
    def CheckBrain(
        self, request: brain_pb2.CheckBrainRequest, context: grpc.ServicerContext
    ) -> brain_pb2.CheckBrainResponse:
        who = self.auth.principal(context)
        choice = request.brain if request.HasField("brain") else None
        ok, brain, message = self.brains.check(choice, who.name)
        return brain_pb2.CheckBrainResponse(ok=ok, brain=brain, message=message)

    @unary
    def SetBrainKey(
        self, request: brain_pb2.SetBrainKeyRequest, context: grpc.ServicerContext
    ) -> brain_pb2.SetBrainKeyResponse:
        who = self.auth.principal(context)
        stored = self.brains.keys.set(who.name, request.kind.strip().lower(), request.key)
        return brain_pb2.SetBrainKeyResponse(stored=stored)
