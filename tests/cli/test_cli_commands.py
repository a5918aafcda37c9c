"""The CLI's exit codes and one-line errors, through click, where no daemon is needed to know the answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgectl.cli import cli

# Never let a test fall through to autostarting a real per-user daemon.
NO_DAEMON = {"FORGE_DAEMON": "unix:///nonexistent/forged.sock", "FORGE_TOKEN": ""}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_data_file_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["ignite", str(tmp_path / "missing.csv"), "goal"], env=NO_DAEMON)
    assert result.exit_code == 2
    assert "does not exist" in _one_error_line(result.stderr)
    assert result.stdout == ""


def test_directory_as_data_file_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["ignite", str(tmp_path), "goal"], env=NO_DAEMON)
    assert result.exit_code == 2
    assert "directory" in _one_error_line(result.stderr)


def test_empty_goal_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("instruction,output\nhi,hello\n")
    result = runner.invoke(cli, ["ignite", str(data), "   "], env=NO_DAEMON)
    assert result.exit_code == 2
    assert "goal" in _one_error_line(result.stderr)


def test_json_mode_errors_are_json_on_stdout(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["--json", "ignite", str(tmp_path / "nope.csv"), "goal"], env=NO_DAEMON)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["code"] == "INVALID_ARGUMENT" and "does not exist" in doc["error"]


def test_named_daemon_unreachable_is_exit_3(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--daemon", "unix:///nonexistent.sock", "status"], env=NO_DAEMON)
    assert result.exit_code == 3
    line = _one_error_line(result.stderr)
    assert "cannot reach forged at unix:///nonexistent.sock" in line
    assert "systemctl start forged" in line


def test_env_daemon_unreachable_is_exit_3_with_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["jobs", "--json"], env=NO_DAEMON)
    assert result.exit_code == 3
    assert json.loads(result.stdout)["code"] == "UNAVAILABLE"


def test_bad_address_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--daemon", "ftp://x", "gpus"], env=NO_DAEMON)
    assert result.exit_code == 2
    _one_error_line(result.stderr)


def test_bad_option_values_are_click_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["ignite", str(tmp_path), "goal", "--epochs", "0"], env=NO_DAEMON)
    assert result.exit_code == 2
    result = runner.invoke(cli, ["jobs", "--state", "bogus"], env=NO_DAEMON)
    assert result.exit_code == 2
