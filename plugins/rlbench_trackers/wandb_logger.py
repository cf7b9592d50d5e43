"""The ``wandb`` logger: one Weights & Biases run per rlbench run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import wandb

from rlbench import LogContext, Logger, RunStart
from rlbench_trackers.common import episode_scalars, evaluation_scalars, metric_scalars

#: The x-axis of every metric: the run's environment step.
STEP = "env_step"


class WandbLogger(Logger):
    """W&B runs named by run id, grouped by agent label and environment, in the project
    named after the suite (``$WANDB_PROJECT`` overrides); offline (``LOG_DIR/wandb``) unless
    ``$WANDB_MODE`` says otherwise. The config and provenance go to the run's config, the
    status to its summary; every metric is plotted against ``env_step``."""

    def __init__(self, context: LogContext) -> None:
        self.dir = Path(context.log_dir)
        self.project = os.environ.get("WANDB_PROJECT") or context.suite
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self.runs: dict[str, Any] = {}

    def start_run(self, run: RunStart) -> None:
        if run.run_id in self.runs:
            return  # resumed elsewhere (a lost Ray task): the same W&B run goes on
        self.dir.mkdir(parents=True, exist_ok=True)
        config = run.config
        handle = wandb.init(
            project=self.project,
            name=run.run_id,
            group=f"{config.get('label', '')}__{config.get('env', '')}",
            tags=[str(config.get("label", "")), str(config.get("env", ""))],
            config={**config, "provenance": dict(run.provenance)},
            dir=str(self.dir),
            mode=self.mode,
            reinit="create_new",
            settings=wandb.Settings(
                silent=True,
                console="off",
                save_code=False,
                disable_git=True,
                disable_job_creation=True,
                x_disable_stats=True,
            ),
        )
        handle.define_metric(STEP)
        handle.define_metric("*", step_metric=STEP)
        self.runs[run.run_id] = handle

    def log_episodes(self, run_id: str, episodes: Sequence[Mapping[str, Any]]) -> None:
        handle = self.runs[run_id]
        for step, scalars in episode_scalars(episodes):
            handle.log({STEP: step, **scalars})

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        self.runs[run_id].log({STEP: step, **metric_scalars(metrics)})

    def log_evaluation(self, run_id: str, evaluation: Mapping[str, Any]) -> None:
        step = int(evaluation["step"])
        self.runs[run_id].log({STEP: step, **evaluation_scalars(evaluation)})

    def end_run(self, run_id: str, status: Mapping[str, Any]) -> None:
        handle = self.runs.pop(run_id)
        handle.summary.update({f"status/{key}": value for key, value in status.items()})
        handle.finish(exit_code=0 if status.get("status") == "complete" else 1)

    def close(self) -> None:
        for handle in self.runs.values():  # runs that did not end (Ctrl-C)
            handle.finish(exit_code=1)
        self.runs.clear()
