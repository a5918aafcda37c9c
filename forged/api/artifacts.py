"""forge.v1.Artifacts: content-addressed upload and download."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from forge.v1 import artifacts_pb2, artifacts_pb2_grpc

from forged.api.auth import Authenticator
from forged.api.errors import ApiError, streaming, unary
from forged.store.blobs import BlobStore

CHUNK = 1 << 20


class ArtifactsService(artifacts_pb2_grpc.ArtifactsServicer):
    def __init__(self, blobs: BlobStore, auth: Authenticator, max_upload: int) -> None:
        self.blobs = blobs
        self.auth = auth
        self.max_upload = max_upload

    @unary
    def Upload(
        self, request_iterator: Iterator[artifacts_pb2.UploadRequest], context: grpc.ServicerContext
    ) -> artifacts_pb2.Artifact:
        who = self.auth.principal(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "an upload must start with its header")
        header = first.header

        def chunks() -> Iterator[bytes]:
            for req in request_iterator:
                if req.WhichOneof("part") != "chunk":
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "only one header per upload")
                yield req.chunk

        digest, size = self.blobs.put_stream(chunks(), who.name, header.name, self.max_upload)
        if header.size and size != header.size:
            raise ApiError(grpc.StatusCode.DATA_LOSS, f"upload truncated: got {size} of {header.size} bytes")
        if header.expected_digest and header.expected_digest != digest:
            raise ApiError(grpc.StatusCode.DATA_LOSS, f"upload corrupted: digest {digest} != expected")
        return artifacts_pb2.Artifact(digest=digest, size=size, name=header.name)

    def _find(self, digest: str, context: grpc.ServicerContext) -> tuple[int, str]:
        who = self.auth.principal(context)
        found = self.blobs.lookup(digest, None if who.admin else who.name)
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no artifact {digest} of yours")
        return found

    @unary
    def Stat(
        self, request: artifacts_pb2.StatArtifactRequest, context: grpc.ServicerContext
    ) -> artifacts_pb2.Artifact:
        size, name = self._find(request.digest, context)
        return artifacts_pb2.Artifact(digest=request.digest, size=size, name=name)

    @streaming
    def Download(
        self, request: artifacts_pb2.DownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[artifacts_pb2.DownloadResponse]:
        size, _ = self._find(request.digest, context)
        offset = 0
        with self.blobs.path(request.digest).open("rb") as f:
            while chunk := f.read(CHUNK):
                yield artifacts_pb2.DownloadResponse(chunk=chunk, offset=offset, total_size=size)
                offset += len(chunk)
