from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Forged, running_forged
from postgres import fresh_database, server_bin_dir, throwaway_cluster


@pytest.fixture
def forged(tmp_path: Path) -> Iterator[Forged]:
    with running_forged(tmp_path / "state") as d:
        yield d


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The public datasets beside the checkout (../shared/datasets; .ci/run sets FORGE_REALDATA)."""
    root = os.environ.get("FORGE_REALDATA")
    if not root:
        pytest.skip("FORGE_REALDATA is unset: point it at the shared datasets folder to run real-data checks")
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f"FORGE_REALDATA={root} is not a directory")
    return path


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """A real PostgreSQL on loopback for the whole session; skipped only where its binaries are missing."""
    if server_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg", reason="pip install 'forge-llm[postgres]' for the PostgreSQL tests")
    with throwaway_cluster() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_cluster: str) -> str:
    """An empty database of its own for each test."""
    return fresh_database(postgres_cluster)
