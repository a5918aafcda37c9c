"""Where the training curves go besides the event stream: TensorBoard always, W&B and MLflow when set up.

TensorBoard files live in `output_dir/tensorboard/`, one events file per attempt. A resumed attempt opens its
writer with `purge_step` at the first step it will log, so TensorBoard hides whatever an interrupted attempt
logged past the checkpoint it resumed from: every step appears once.

W&B is used when WANDB_API_KEY is in the runner's environment, MLflow when MLFLOW_TRACKING_URI is, and each
only if its package imports (neither is in the runner image; a custom image may add them). Both get the same
scalars under the same names. A tracker that fails mid-run is dropped with a warning: an unreachable
tracking server must not cost the training run.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from runner_image import events

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run_id"


class Trackers:
    def __init__(self, output_dir: Path, job_id: str, first_step: int, config: dict[str, Any]) -> None:
        """`first_step`: the first step this attempt logs (0 for a fresh run: its baseline eval)."""
        self.dir = output_dir / TENSORBOARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tensorboard = SummaryWriter(str(self.dir), purge_step=first_step)
        self._remote: dict[str, Any] = {}
        wandb = _configured_module("WANDB_API_KEY", "wandb", "W&B")
        if wandb is not None:
            self._guard("W&B", lambda: self._start_wandb(wandb, job_id, config))
        mlflow = _configured_module("MLFLOW_TRACKING_URI", "mlflow", "MLflow")
        if mlflow is not None:
            self._guard("MLflow", lambda: self._start_mlflow(mlflow, output_dir, job_id, config))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        # An fp16 overflow's infinite gradient norm is reported on the event stream; a plot only loses scale.
        finite = {name: value for name, value in scalars.items() if math.isfinite(value)}
        for name, value in finite.items():
            self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()  # a kill loses no more than the current step
        if "W&B" in self._remote:
            self._guard("W&B", lambda: self._remote["W&B"].log(finite, step=step))
        if "MLflow" in self._remote:
            self._guard("MLflow", lambda: self._remote["MLflow"].log_metrics(finite, step=step))

    def close(self) -> None:
        self._tensorboard.close()
        if "W&B" in self._remote:
            self._guard("W&B", lambda: self._remote["W&B"].finish())
        if "MLflow" in self._remote:
            self._guard("MLflow", lambda: self._remote["MLflow"].end_run())

    def _start_wandb(self, wandb: Any, job_id: str, config: dict[str, Any]) -> None:
        project = os.environ.get("WANDB_PROJECT", "forge")
        # The job id as the run id: a resumed attempt continues the same W&B run.
        self._remote["W&B"] = wandb.init(
            project=project, id=job_id, name=job_id, resume="allow", config=config
        )
        events.log(f"logging to W&B project {project}, run {job_id}")

    def _start_mlflow(self, mlflow: Any, output_dir: Path, job_id: str, config: dict[str, Any]) -> None:
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "forge"))
        run_file = output_dir / MLFLOW_RUN_FILE
        resumed = run_file.read_text().strip() if run_file.is_file() else None
        run = mlflow.start_run(run_id=resumed) if resumed else mlflow.start_run(run_name=job_id)
        run_file.write_text(run.info.run_id + "\n")
        if not resumed:
            mlflow.log_params(config)
        self._remote["MLflow"] = mlflow
        events.log(f"logging to MLflow at {os.environ['MLFLOW_TRACKING_URI']}, run {run.info.run_id}")

    def _guard(self, name: str, call: Any) -> None:
        try:
            call()
        except Exception as e:  # any failure of a remote tracker: drop it, keep training
            self._remote.pop(name, None)
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            events.log(f"{name} logging failed and is off for this run: {first_line}", level="warning")


def _configured_module(env: str, module: str, label: str) -> Any | None:
    if not os.environ.get(env):
        return None
    try:
        # By name: the runner image does not ship these, and nothing else may depend on them.
        return importlib.import_module(module)
    except ImportError:
        events.log(f"{env} is set but {module} is not installed in the runner: not logging to {label}")
        return None
