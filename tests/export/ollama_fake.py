"""A stand-in for an Ollama server on loopback, speaking the documented HTTP API of the endpoints Forge uses.

Ollama itself cannot run here, so this is the network boundary: `HEAD`/`POST /api/blobs/sha256:<hex>` (the
uploaded bytes must hash to the digest in the path, else 400 as Ollama answers), `POST /api/create` (every
file must name a pushed blob that is a GGUF; `stop` must be a list of strings; the reply streams NDJSON status
lines ending in `success`, or is one object with `stream: false`), `GET /api/tags`, and a streaming
`POST /api/chat` whose reply is a fixed text, so a client's streaming can be checked without a model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_REPLY = ["Your ", "order ", "ships ", "today."]
_CREATE_FIELDS = {
    "model", "stream", "quantize", "from", "files", "adapters", "template", "license", "system",
    "parameters", "messages",
}  # fmt: skip


@dataclass
class FakeOllamaState:
    blobs: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    blob_posts: int = 0
    rejected: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing ----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self.server.state.rejected.append(message)
        self._json(status, {"error": message})

    def _ndjson(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _digest_from_path(self) -> str | None:
        digest = self.path.removeprefix("/api/blobs/")
        hexpart = digest.removeprefix("sha256:")
        hex_ok = len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)
        ok = digest.startswith("sha256:") and hex_ok
        return digest if ok else None

    # -- endpoints -----------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        digest = self._digest_from_path() if self.path.startswith("/api/blobs/") else None
        self.send_response(200 if digest in self.server.state.blobs else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path != "/api/tags":
            return self._error(404, f"404 page not found: GET {self.path}")
        self._json(200, {"models": list(self.server.state.models.values())})

    def do_POST(self) -> None:
        body = self._body()
        state = self.server.state
        if self.path.startswith("/api/blobs/"):
            state.blob_posts += 1
            digest = self._digest_from_path()
            if digest is None:
                return self._error(400, "invalid digest format")
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                return self._error(400, "digest mismatch")
            state.blobs[digest] = body
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self._error(400, "invalid JSON")
        if self.path == "/api/create":
            return self._create(request)
        if self.path == "/api/chat":
            return self._chat(request)
        return self._error(404, f"404 page not found: POST {self.path}")

    def _create(self, request: dict[str, Any]) -> None:
        state = self.server.state
        state.creates.append(request)
        unknown = set(request) - _CREATE_FIELDS
        if unknown:
            return self._error(400, f"unknown fields {sorted(unknown)}")
        name = request.get("model")
        if not isinstance(name, str) or not name:
            return self._error(400, "model is required")
        files = request.get("files")
        if not isinstance(files, dict) or not files:
            return self._error(400, "neither 'from' or 'files' was specified")
        for filename, digest in files.items():
            blob = state.blobs.get(digest)
            if blob is None:
                return self._error(400, f"blob {digest} for {filename} not found")
            if not blob.startswith(b"GGUF"):
                return self._error(400, f"{filename} is not a GGUF file")
        stop = (request.get("parameters") or {}).get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            return self._error(400, "parameters.stop must be a list of strings")
        tagged = name if ":" in name else f"{name}:latest"
        blob_digest = next(iter(files.values()))
        state.models[tagged] = {
            "name": tagged,
            "model": tagged,
            "modified_at": datetime.now(UTC).isoformat(),
            "size": len(state.blobs[blob_digest]),
            "digest": hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest(),
            "details": {"format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": ""},
        }
        statuses = [
            {"status": "parsing GGUF"},
            {"status": f"using existing layer {blob_digest}"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        if request.get("stream") is False:
            return self._json(200, statuses[-1])
        return self._ndjson(statuses)

    def _chat(self, request: dict[str, Any]) -> None:
        state = self.server.state
        state.chats.append(request)
        name = request.get("model", "")
        if (name if ":" in name else f"{name}:latest") not in state.models:
            return self._error(404, f"model '{name}' not found")
        now = datetime.now(UTC).isoformat()

        def reply(content: str, done: bool) -> dict[str, Any]:
            message = {"role": "assistant", "content": content}
            return {"model": name, "created_at": now, "message": message, "done": done}

        parts = [reply(piece, False) for piece in CHAT_REPLY]
        final = {**reply("", True), "done_reason": "stop"}
        if request.get("stream") is False:
            return self._json(200, {**reply("".join(CHAT_REPLY), True), "done_reason": "stop"})
        return self._ndjson([*parts, final])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = FakeOllamaState()


class FakeOllama:
    """`with FakeOllama() as fake:` serves on loopback (any free port unless told); `fake.url` is the host."""

    def __init__(self, port: int = 0) -> None:
        self._server = _Server(port)
        self.state = self._server.state
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ollama", daemon=True)

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
