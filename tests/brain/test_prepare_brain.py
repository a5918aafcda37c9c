"""Prepare with a brain: what is sent (redacted, or nothing with no_upload), the repair loop, the template.

The brain here is scripted in-process: the repair loop is the subject, and the Gemini/OpenAI wire formats
are tested with the brains that speak them (forged/brain/llm/). Scripts run in the real sandbox.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import BaseModel

from forged.brain import sandbox
from forged.brain.ingest import DataError, load_records, prepare, to_examples
from forged.brain.mapping import ColumnMapping
from forged.brain.scripting import ScriptAnswer
from forged.brain.scripts.render import render

T = TypeVar("T", bound=BaseModel)
needs_bwrap = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)

BROKEN = "raise SystemExit(1 / 0)\n"
# Valid JSON, wrong shape: two user turns in a row.
UNALTERNATING = (
    "import json\n"
    "with open('/out/prepared.jsonl', 'w') as f:\n"
    "    for i in range(12):\n"
    "        m = [{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'},"
    " {'role': 'assistant', 'content': 'c'}]\n"
    "        f.write(json.dumps({'messages': m}) + '\\n')\n"
)


class ScriptedBrain:
    """Answers from a list, and records each prompt it was asked."""

    name = "scripted"

    def __init__(self, answers: list[ScriptAnswer]) -> None:
        self.answers = answers
        self.prompts: list[str] = []

    def ask(self, system: str, prompt: str, schema: type[T]) -> T:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        return schema.model_validate(answer.model_dump())


def tickets(tmp_path: Path, rows: int = 30) -> Path:
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Customer Email", "Ticket Description", "Resolution"])
        for i in range(rows):
            w.writerow(
                [f"user{i}@example.com", f"My order {i} is late, call me at 555-123-{4000 + i}", f"Sent {i}"]
            )
    return path


FLAT = ColumnMapping(layout="flat", prompt="Ticket Description", response="Resolution")


@needs_bwrap
def test_repairs_until_the_output_validates(tmp_path: Path) -> None:
    brain = ScriptedBrain(
        [
            ScriptAnswer(mapping=FLAT, script=BROKEN),
            ScriptAnswer(mapping=FLAT, script=UNALTERNATING),
            ScriptAnswer(mapping=FLAT),  # the template for the mapping
        ]
    )
    result = prepare(
        tickets(tmp_path), "tickets.csv", tmp_path / "out", seed=1, goal="support bot", brain=brain
    )
    assert result.repairs == 2 and result.brain == "scripted"
    assert "ZeroDivisionError" in brain.prompts[1]
    assert "roles must alternate" in brain.prompts[2]
    assert result.stats.train_examples + result.stats.val_examples == 30
    assert json.loads(result.mapping_json)["prompt"] == "Ticket Description"
    assert result.sent == [s for p in brain.prompts for s in (result.sent[0], p)]
    assert "repaired 2 times" in " ".join(result.notes)
    # The script returned is the one that produced the data, and it is saved beside it.
    assert result.script == (tmp_path / "out" / "prepare_script.py").read_text()
    assert result.script.startswith("#!/usr/bin/env python3")


@needs_bwrap
def test_gives_up_after_three_repairs(tmp_path: Path) -> None:
    brain = ScriptedBrain([ScriptAnswer(mapping=FLAT, script=BROKEN) for _ in range(4)])
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare(tickets(tmp_path), "tickets.csv", out, seed=1, brain=brain)
    message = str(info.value)
    assert message.startswith(
        "the scripted brain's processing script failed after 3 repairs: exited with status 1"
    )
    assert "ZeroDivisionError" in message and "\n" not in message
    assert len(brain.prompts) == 4 and not out.exists()


@needs_bwrap
def test_samples_are_redacted_and_no_upload_sends_none(tmp_path: Path) -> None:
    src = tickets(tmp_path)
    brain = ScriptedBrain([ScriptAnswer(mapping=FLAT)])
    sent = prepare(src, "tickets.csv", tmp_path / "a", seed=1, brain=brain).sent
    text = "\n".join(sent)
    assert "<EMAIL>" in text and "<PHONE>" in text and "My order 0 is late" in text
    assert "@example.com" not in text and "555-123-" not in text

    brain = ScriptedBrain([ScriptAnswer(mapping=FLAT)])
    sent = prepare(src, "tickets.csv", tmp_path / "b", seed=1, brain=brain, no_upload=True).sent
    text = "\n".join(sent)
    assert "Ticket Description" in text and "No sample rows" in text
    assert "order" not in text and "<EMAIL>" not in text and "Sent 1" not in text


def test_an_invalid_mapping_from_a_brain_is_refused() -> None:
    with pytest.raises(ValueError, match="layout flat needs the response column"):
        ColumnMapping.model_validate({"layout": "flat", "prompt": "q"})
    with pytest.raises(ValueError, match="Extra inputs"):
        ColumnMapping.model_validate({"layout": "text", "text": "t", "shell": "rm -rf /"})


def test_template_script_runs_without_forge(tmp_path: Path) -> None:
    """The saved script is standalone: plain python, no forged on the path, same examples as the daemon's."""
    src = tmp_path / "alpaca.json"
    records = [
        {"instruction": "Add 2 and 2", "input": "<no input>", "output": "4"},
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Empty", "input": "", "output": ""},
    ]
    src.write_text(json.dumps(records))
    mapping = ColumnMapping(layout="flat", prompt="instruction", context="input", response="output")
    script = tmp_path / "prepare_script.py"
    script.write_text(render(mapping, src.name))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--input", str(src), "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    written = [json.loads(line)["messages"] for line in (out / "prepared.jsonl").read_text().splitlines()]
    examples, _, _ = to_examples(load_records(src, src.name)[0], src.name)
    assert written == examples
    assert written[0][0]["content"] == "Add 2 and 2"  # the placeholder input is not in the prompt
    assert json.loads((out / "report.json").read_text())["dropped_reasons"] == {"empty response": 1}
