"""forge.yaml and the project directory, where no daemon is needed to know the answer: a hand-edited file is
one line naming the line, the key and what is allowed, and nothing is sent or submitted."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from forge.train_fields import HPARAM_FIELDS

from forgectl.cli import cli
from forgectl.client import ForgeError
from forgectl.project import (
    ForgeConfig,
    ProjectInfo,
    TrainingSettings,
    atomic_write,
    parse_config,
    render_config,
    workspace,
    write_project,
)

# An unreachable daemon: if a command got as far as calling forged it would exit 3, not 2.
NO_DAEMON = {"FORGE_DAEMON": "unix:///nonexistent/forged.sock", "FORGE_TOKEN": ""}


def planned() -> ForgeConfig:
    return ForgeConfig(
        goal="Answer: 'yes' or no",
        model="tiny",
        training=TrainingSettings(
            epochs=2, micro_batch_size=4, learning_rate=2e-5, lora_dropout=0.0, method="lora"
        ),
    )


def test_written_forge_yaml_reads_back_the_same_with_each_reason_above_its_value() -> None:
    config = planned()
    text = render_config(config, {"training.epochs": "yours (--epochs)", "model": "the pipeline check"})
    assert parse_config(text) == config
    lines = text.splitlines()
    assert lines[lines.index("  epochs: 2") - 1] == "  # yours (--epochs)"
    assert lines[lines.index('model: "tiny"') - 1] == "# the pipeline check"


def test_every_trainspec_hyperparameter_can_be_set_in_forge_yaml() -> None:
    assert set(HPARAM_FIELDS) <= set(TrainingSettings.model_fields)


def test_learning_rates_written_the_short_way_are_numbers() -> None:
    assert parse_config("training:\n  learning_rate: 2e-4\n").training.learning_rate == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model: tiny\ntraining:\n  epoch: 3\n",
            "forge.yaml line 3: unknown key 'epoch' in training; allowed: epochs,",
        ),
        (
            "goal: x\nmodl: tiny\n",
            "forge.yaml line 2: unknown key 'modl'; allowed: goal, model, brain, data, training",
        ),
        (
            "training:\n  epochs: three\n",
            "forge.yaml line 2: training.epochs should be a valid integer, not 'three'",
        ),
        (
            "training:\n  epochs: 0\n",
            "forge.yaml line 2: training.epochs should be greater than or equal to 1",
        ),
        ("brain:\n  kind: gemni\n", "forge.yaml line 2: brain.kind should be 'offline', 'gemini' or 'local'"),
        ("training:\n  method: qlor\n", "training.method should be 'lora' or 'qlora', not 'qlor'"),
        ("goal: [unclosed\n", "forge.yaml line 2: not valid YAML"),
        (
            "- just\n- a list\n",
            "forge.yaml: the file must be a mapping of keys (goal, model, brain, data, training)",
        ),
    ],
)
def test_hand_edit_mistakes_are_one_line_saying_where_and_what(text: str, expected: str) -> None:
    with pytest.raises(ForgeError) as err:
        parse_config(text)
    assert expected in err.value.message
    assert "\n" not in err.value.message


def test_the_project_is_found_from_any_subdirectory(tmp_path: Path) -> None:
    write_project(tmp_path, ProjectInfo(id="p-0123456789", name="demo"))
    deep = tmp_path / "data" / "nested"
    deep.mkdir(parents=True)
    ws = workspace(deep)
    assert ws.root == tmp_path.resolve() and ws.project == ProjectInfo("p-0123456789", "demo")
    outside = workspace(tmp_path.parent)
    assert outside.project is None and outside.root == tmp_path.parent.resolve()


def test_atomic_write_replaces_whole_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "forge.yaml"
    atomic_write(target, "old\n")
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["forge.yaml"]


def _project(root: Path, forge_yaml: str) -> None:
    write_project(root, ProjectInfo(id="p-0123456789", name="demo"))
    (root / "forge.yaml").write_text(forge_yaml)


def test_train_with_a_bad_key_in_forge_yaml_is_exit_2_before_any_daemon_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = render_config(planned()).replace("  epochs: 2\n", "  epocs: 2\n")
    _project(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train"], env=NO_DAEMON)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    line_no = text.splitlines().index("  epocs: 2") + 1
    assert lines == [lines[0]] and lines[0].startswith(
        f"error: forge.yaml line {line_no}: unknown key 'epocs'"
    )
    assert "Traceback" not in result.stderr


def test_train_without_a_planned_model_says_to_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tmp_path, render_config(ForgeConfig()))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train"], env=NO_DAEMON)
    assert result.exit_code == 2
    assert "forge.yaml has no model: run `forgectl plan" in result.stderr


def test_init_refuses_an_existing_project_before_any_daemon_call(tmp_path: Path) -> None:
    _project(tmp_path, "goal: mine\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)], env=NO_DAEMON)
    assert result.exit_code == 2
    assert "already a forge project" in result.stderr
    assert (tmp_path / "forge.yaml").read_text() == "goal: mine\n"


def test_init_with_gemini_and_no_key_anywhere_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    env = {**NO_DAEMON, "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "p"), "--brain", "gemini"], env=env, input="")
    assert result.exit_code == 2
    assert "no gemini API key: set GEMINI_API_KEY or GOOGLE_API_KEY" in result.stderr
    assert not (tmp_path / "p").exists()


def test_endpoint_belongs_to_the_local_brain(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["init", str(tmp_path / "p"), "--endpoint", "http://x:1/v1"], env=NO_DAEMON
    )
    assert result.exit_code == 2
    assert "--endpoint is for --brain local" in result.stderr
