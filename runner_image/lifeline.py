"""Tie the runner's life to its supervisor's, so a dead daemon never leaves an unsupervised trainer.

forged sets FORGE_PARENT_PID. The runner asks the kernel for SIGTERM when that parent dies (Linux
PR_SET_PDEATHSIG); SIGTERM already means "checkpoint and exit 75", so the restarted daemon resumes the job
from that checkpoint. The parent check after prctl closes the race where the parent died first.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def bind_to_parent() -> None:
    expected = os.environ.get("FORGE_PARENT_PID")
    if not expected or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)
