"""Wake-ups for watchers. The database holds the events; the bus only says "look again"."""

from __future__ import annotations

import threading
from collections import defaultdict


class EventBus:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = defaultdict(int)
        self._closed = False

    def notify(self, job_id: str) -> None:
        with self._cond:
            self._versions[job_id] += 1
            self._cond.notify_all()

    def version(self, job_id: str) -> int:
        with self._cond:
            return self._versions[job_id]

    def wait(self, job_id: str, seen_version: int, timeout: float) -> int:
        """Block until job_id changes after seen_version (or timeout / close); returns the new version."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._versions[job_id] != seen_version, timeout)
            return self._versions[job_id]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
