"""The committed gRPC code is exactly what the committed .proto files generate."""

from __future__ import annotations

import filecmp
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent.parent / "protos"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "forge" / "v1").glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *sources,
        ]
    )
    assert rc == 0
    generated = sorted(p.name for p in (tmp_path / "forge" / "v1").iterdir())
    stale = [
        n
        for n in generated
        if not filecmp.cmp(tmp_path / "forge" / "v1" / n, PROTOS / "forge" / "v1" / n, shallow=False)
    ]
    assert not stale, f"run `make protos`: {stale} are out of date"
