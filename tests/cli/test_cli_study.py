"""`forgectl study` as a user runs it: a real forgectl process, a real forged, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from harness import REPO, Forged, forge_env
from PIL import Image

FIXTURES = REPO / "tests" / "fixtures" / "study"


def forgectl(daemon: Forged, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forgectl", "--daemon", daemon.address, *args],
        env=forge_env(PYTHONPATH=f"{REPO}:{REPO / 'protos'}"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_study_json_and_histogram(forged: Forged, tmp_path: Path) -> None:
    data = tmp_path / "mangled.csv"
    shutil.copy(FIXTURES / "mangled.csv", data)
    png = tmp_path / "out" / "hist.png"
    png.parent.mkdir()

    done = forgectl(
        forged, "study", str(data), "--goal", "answer product questions", "--json", "--png", str(png)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["file"], report["format"], report["rows"]) == ("mangled.csv", "csv", 3)
    collapsed = next(f for f in report["findings"] if f["code"] == "collapsed_rows")
    assert collapsed["severity"] == "error" and collapsed["row_numbers"] == [3]
    assert f"token-length histogram: {png}" in done.stderr
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", (900, 460))

    # Without --png the histogram lands next to the file, and the human report says where.
    done = forgectl(forged, "study", str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mangled.csv.lengths.png").is_file()
    assert "mangled.csv.lengths.png" in done.stdout and "swallow the rows after them" in done.stdout


def test_study_bad_file_is_one_line_exit_2(forged: Forged, tmp_path: Path) -> None:
    data = tmp_path / "photo.csv"
    data.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    done = forgectl(forged, "study", str(data))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: photo.csv looks like a binary file"), lines
    assert not (tmp_path / "photo.csv.lengths.png").exists()
    assert forged.healthy()
