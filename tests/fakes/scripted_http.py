"""A real HTTP server on 127.0.0.1 whose replies a test scripts request by request, recording each request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # JSON-serialisable, or str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to stall before answering: a hanging server


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text when it is not JSON


class ScriptedServer:
    """Replies come from `script` in order; once it is used up, `then` answers every further request.

    `route` maps a request path to True when the service serves it; anything else gets a 404, as the real
    service would give a client that built the wrong URL.
    """

    def __init__(self, route: Callable[[str, str], bool], not_found: Callable[[str], Reply]) -> None:
        self.script: list[Reply] = []
        self.then: Reply | None = None
        self.by_path: dict[str, Reply] = {}  # a request whose path contains the key gets that reply, always
        self.received: list[Received] = []
        self._route = route
        self._not_found = not_found
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(
        self, *replies: Reply, then: Reply | None = None, by_path: dict[str, Reply] | None = None
    ) -> Self:
        """Script the next replies; `by_path` answers concurrent clients told apart by their URL (e.g. the
        model name in Gemini's path) whatever order they arrive in."""
        with self._lock:
            self.script = list(replies)
            self.then = then
            self.by_path = dict(by_path or {})
            self.received.clear()
        return self

    def _next(self, method: str, path: str) -> Reply:
        if not self._route(method, path):
            return self._not_found(path)
        with self._lock:
            for key, reply in self.by_path.items():
                if key in path:
                    return reply
            if self.script:
                return self.script.pop(0)
            if self.then is not None:
                return self.then
        raise AssertionError(f"the test scripted no reply for request {len(self.received)} ({method} {path})")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.received.append(Received("POST", self.path, headers, body))
                reply = fake._next("POST", self.path)
                if reply.delay:
                    time.sleep(reply.delay)
                data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
