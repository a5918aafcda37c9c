"""A forge project on disk: where it is, its forge.yaml (schema, strict loading, commented writing), and what
earlier verbs recorded in .forge/ so later ones need no re-upload.

forge.yaml is what a person edits by hand, so every way it can be wrong is one line naming the line, the
key and what is allowed. Everything here is written atomically: a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from forge.train_fields import HPARAM_FIELDS
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgectl.client import ForgeError

STATE_DIR = ".forge"
PROJECT_FILE = "project.json"
PREPARED_FILE = "prepared.json"
PLAN_FILE = "plan.json"
CONFIG_FILE = "forge.yaml"
DATA_DIR = "data"
TRAIN_FILE = f"{DATA_DIR}/processed_train.jsonl"
VAL_FILE = f"{DATA_DIR}/processed_val.jsonl"
SCRIPT_FILE = f"{DATA_DIR}/prepare_script.py"
BRAIN_KINDS = ("offline", "gemini", "local")
OLLAMA_ENDPOINT = "http://127.0.0.1:11434/v1"
BRAIN_REASON = {
    "offline": "offline: deterministic rules; nothing leaves this machine",
    "gemini": "gemini: samples (PII redacted) go to Google's Gemini API; `prepare --no-upload` forbids it",
    "local": "local: an OpenAI-compatible endpoint you run (Ollama, vLLM, llama.cpp server)",
}
R = TypeVar("R", bound=BaseModel)


# ---------------------------------------------------------------- forge.yaml schema

_STRICT = ConfigDict(extra="forbid", strict=True)


class BrainSettings(BaseModel):
    """Which brain prepares and plans (and diagnoses a failed job)."""

    model_config = _STRICT
    kind: Literal["offline", "gemini", "local"] = "offline"
    model: str = ""
    endpoint: str = ""


class DataSettings(BaseModel):
    """The prepared chat/text JSONL, relative to the project directory; an empty val means no validation."""

    model_config = _STRICT
    train: str = Field(default=TRAIN_FILE, min_length=1)
    val: str = VAL_FILE


class TrainingSettings(BaseModel):
    """TrainSpec's hyper-parameters; unset ones are the planner's to choose."""

    model_config = _STRICT
    epochs: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=0)
    micro_batch_size: int | None = Field(default=None, ge=1)
    grad_accum: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    lora_rank: int | None = Field(default=None, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1)
    lora_dropout: float | None = Field(default=None, ge=0, lt=1)
    max_seq_len: int | None = Field(default=None, ge=16)
    seed: int | None = Field(default=None, ge=0)
    checkpoint_every: int | None = Field(default=None, ge=0)
    eval_every: int | None = Field(default=None, ge=0)
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)
    method: Literal["lora", "qlora"] | None = None
    gradient_checkpointing: bool | None = None
    export: bool = True

    def hparams(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in HPARAM_FIELDS if getattr(self, f) is not None}


class ForgeConfig(BaseModel):
    model_config = _STRICT
    goal: str = ""
    model: str | None = None
    brain: BrainSettings = BrainSettings()
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()


# ---------------------------------------------------------------- loading with one-line errors


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `2e-4` as a string (it wants `2.0e-4`); people write learning rates the short way."""


# Tried after YAML 1.1's own resolvers, so it only catches what they leave as strings: 2e-4, 1E5.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Each key path's 1-based line, so an error can point at the line a person must change."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines.setdefault(sub, key.start_mark.line + 1)
                walk(value, sub)

    root = yaml.compose(text, Loader=_Loader)
    if root is not None:
        walk(root, ())
    return lines


def _allowed(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    for part in path:
        field = model.model_fields.get(str(part))
        sub = field.annotation if field is not None else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return list(model.model_fields)


def _describe(err: Mapping[str, Any], where: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        section = f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else ""
        allowed = ", ".join(_allowed(ForgeConfig, loc[:-1]))
        return f"{where}unknown key {loc[-1]!r}{section}; allowed: {allowed}"
    if err["type"] == "model_type":
        allowed = ", ".join(_allowed(ForgeConfig, loc))
        return f"{where}{dotted or 'the file'} must be a mapping of keys ({allowed}), not {err['input']!r}"
    expected = str(err["msg"]).removeprefix("Input ").removeprefix("Value ")
    return f"{where}{dotted} {expected}, not {err['input']!r}"


def parse_config(text: str, name: str = CONFIG_FILE) -> ForgeConfig:
    """Parse forge.yaml's text; any problem is a ForgeError of one line: where, what, what is allowed."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
        lines = _key_lines(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ForgeError(f"{name}{at}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ForgeError(f"{name}: not valid YAML: {exc}") from None
    try:
        return ForgeConfig.model_validate({} if data is None else data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        path = tuple(str(p) for p in first["loc"])
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        where = f"{name} line {line}: " if line else f"{name}: "
        more = (
            f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            if len(errors) > 1
            else ""
        )
        raise ForgeError(_describe(first, where) + more) from None


def load_config(path: Path) -> ForgeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ForgeError(
            f'no {path.name} in {path.parent}: run `forgectl plan "GOAL"` to write one'
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgeError(f"cannot read {path}: {exc}") from None
    return parse_config(text, path.name)


# ---------------------------------------------------------------- writing, commented


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # JSON's string syntax is valid YAML, and quoting every string keeps 'yes', '1e3' and 'null' strings.
    return json.dumps(str(value), ensure_ascii=False)


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), 100 - len(indent))]


HEADER = (
    'forge.yaml: what `forgectl train` submits. `forgectl plan "GOAL"` writes it with the reason for each '
    "value; edit any value by hand and train uses yours (keys must stay as written: a typo is an error)."
)


def render_config(config: ForgeConfig, reasons: Mapping[str, str] | None = None, note: str = "") -> str:
    """The YAML text of `config`, each value under a comment with its reason (keys like `training.epochs`)."""
    why = reasons or {}
    out = [*_comment(HEADER, ""), *(_comment(note, "") if note else []), ""]

    def put(key: str, value: Any, path: str, indent: str = "") -> None:
        if path in why:
            out.extend(_comment(why[path], indent))
        out.append(f"{indent}{key}: {_scalar(value)}")

    put("goal", config.goal, "goal")
    if config.model is not None:
        put("model", config.model, "model")
    else:
        out.extend(_comment("no model yet: `forgectl plan` chooses one", ""))
    sections: list[tuple[str, BaseModel, str]] = [
        ("brain", config.brain, "which brain prepares and plans: offline (rules, nothing leaves this "
         "machine), gemini, or local (an OpenAI-compatible endpoint such as Ollama)"),
        ("data", config.data, "the prepared data, relative to this directory (`forgectl prepare` writes it)"),
        ("training", config.training, "LoRA fine-tuning settings"),
    ]  # fmt: skip
    for name, section, about in sections:
        values = {k: v for k, v in section.model_dump().items() if v is not None}
        out.append("")
        out.extend(_comment(about, ""))
        out.append(f"{name}:")
        for key, value in values.items():
            put(key, value, f"{name}.{key}", "  ")
    return "\n".join(out) + "\n"


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write beside the target and rename over it, so readers see the old file or the new one, never half."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A full disk or a read-only directory is one line naming the path, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise ForgeError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- where the project is


@dataclass(frozen=True)
class ProjectInfo:
    id: str
    name: str


@dataclass(frozen=True)
class Workspace:
    """The directory verbs read and write: a project's root, or the current directory outside any project."""

    root: Path
    project: ProjectInfo | None

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def path(self, relative: str) -> Path:
        return self.root / relative

    def config(self) -> ForgeConfig | None:
        """forge.yaml if there is one (strictly validated), else None."""
        return load_config(self.config_path) if self.config_path.is_file() else None


def read_project(root: Path) -> ProjectInfo:
    path = root / STATE_DIR / PROJECT_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return ProjectInfo(id=str(doc["id"]), name=str(doc.get("name") or root.name))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ForgeError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); restore it or run init elsewhere"
        ) from None


def find_project(start: Path) -> Path | None:
    """The nearest directory at or above `start` with .forge/project.json, like git finds .git."""
    here = start.resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR / PROJECT_FILE).is_file():
            return candidate
    return None


def workspace(cwd: Path | None = None) -> Workspace:
    start = cwd or Path.cwd()
    root = find_project(start)
    if root is None:
        return Workspace(start.resolve(), None)
    return Workspace(root, read_project(root))


def write_project(root: Path, info: ProjectInfo) -> None:
    atomic_write(
        root / STATE_DIR / PROJECT_FILE, json.dumps({"id": info.id, "name": info.name}, indent=2) + "\n"
    )


# ---------------------------------------------------------------- what earlier verbs recorded


class PreparedRecord(BaseModel):
    """What `forgectl prepare` produced: the daemon-side digests (so train needs no re-upload) and stats."""

    source: str
    goal: str
    brain: str
    train_data: str
    val_data: str
    train_file: str
    val_file: str
    script_file: str = ""
    stats: dict[str, Any]
    sent: list[str] = []
    notes: list[str] = []
    prepared_at: datetime


# The plan's memory estimate holds only while these settings are the planned ones.
MEMORY_INPUTS = ("model", "micro_batch_size", "max_seq_len", "lora_rank", "method", "gradient_checkpointing")


class PlanRecord(BaseModel):
    goal: str
    brain: str
    memory_bytes: int = 0
    memory_inputs: dict[str, Any] = {}
    planned: dict[str, Any] = {}  # the model and hyper-parameters as planned: what differs now is a hand edit
    overrides: list[str] = []
    decisions: list[dict[str, str]] = []
    planned_at: datetime


def memory_inputs(config: ForgeConfig) -> dict[str, Any]:
    t = config.training
    return {"model": config.model, **{k: getattr(t, k) for k in MEMORY_INPUTS if k != "model"}}


def planned_values(model: str, training: TrainingSettings) -> dict[str, Any]:
    return {"model": model, **training.hparams()}


def hand_edits(config: ForgeConfig, plan: PlanRecord | None) -> dict[str, Any]:
    """The user's values in forge.yaml: changed by hand since the last plan, or set by a flag then and left
    alone since. A re-plan keeps them as theirs."""
    if plan is None or not plan.planned or not config.model:
        return {}
    now = planned_values(config.model, config.training)
    return {
        f: v for f, v in now.items() if f in plan.planned and (v != plan.planned[f] or f in plan.overrides)
    }


def save_record(ws: Workspace, name: str, record: BaseModel) -> None:
    atomic_write(ws.state / name, record.model_dump_json(indent=2) + "\n")


def load_prepared(ws: Workspace) -> PreparedRecord | None:
    return _load(ws, PREPARED_FILE, PreparedRecord)


def load_plan(ws: Workspace) -> PlanRecord | None:
    return _load(ws, PLAN_FILE, PlanRecord)


def _load(ws: Workspace, name: str, kind: type[R]) -> R | None:
    path = ws.state / name
    try:
        return kind.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ForgeError(f"{path} is damaged ({first}): run the verb that writes it again") from None


def now() -> datetime:
    return datetime.now(UTC)
