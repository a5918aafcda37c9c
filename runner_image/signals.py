"""SIGTERM handling: the handler only records the request; the training loop acts on it at a safe point."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from types import FrameType


@dataclass
class StopFlag:
    """Set on SIGTERM (or SIGINT); the loop checkpoints at the next optimizer-step boundary and exits 75."""

    requested: bool = False


def install(stop: StopFlag) -> None:
    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Nothing else happens here: a handler runs between two bytecodes of whatever the loop was doing, and
        # only an optimizer-step boundary has a consistent state to save.
        stop.requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
