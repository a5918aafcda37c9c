from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Forged, running_forged


@pytest.fixture
def forged(tmp_path: Path) -> Iterator[Forged]:
    with running_forged(tmp_path / "state") as d:
        yield d
