"""The ``tensorboard`` logger: event files written with ``torch.utils.tensorboard``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from rlbench import LogContext, Logger, RunStart
from rlbench_trackers.common import episode_scalars, evaluation_scalars, metric_scalars

#: TensorBoard's event files (what a fresh start of a run removes from its folder).
EVENT_FILES = "events.out.tfevents.*"


def _markdown_json(data: Mapping[str, Any]) -> str:
    """``data`` as a Markdown code block (TensorBoard's text tab renders Markdown)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardLogger(Logger):
    """One folder of event files per run: ``LOG_DIR/tensorboard/<run id>/``. Scalars at the
    run's environment step; the config, provenance and status as text."""

    def __init__(self, context: LogContext) -> None:
        self.root = Path(context.log_dir) / "tensorboard"
        self.writers: dict[str, SummaryWriter] = {}

    def start_run(self, run: RunStart) -> None:
        old = self.writers.pop(run.run_id, None)
        if old is not None:
            old.close()
        folder = self.root / run.run_id
        purge_step = None
        if run.resumed_from is None:
            # Started over: an earlier attempt's events go, as its files did.
            for stale in folder.glob(EVENT_FILES):
                stale.unlink()
        else:
            # TensorBoard drops what an earlier attempt logged after the checkpoint.
            purge_step = run.resumed_from + 1
        writer = SummaryWriter(str(folder), purge_step=purge_step, flush_secs=30)
        if run.resumed_from is None:
            writer.add_text("config", _markdown_json(run.config), 0)
            writer.add_text("provenance", _markdown_json(run.provenance), 0)
        self.writers[run.run_id] = writer

    def log_episodes(self, run_id: str, episodes: Sequence[Mapping[str, Any]]) -> None:
        writer = self.writers[run_id]
        for step, scalars in episode_scalars(episodes):
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        writer = self.writers[run_id]
        for tag, value in metric_scalars(metrics).items():
            writer.add_scalar(tag, value, step)

    def log_evaluation(self, run_id: str, evaluation: Mapping[str, Any]) -> None:
        writer = self.writers[run_id]
        step = int(evaluation["step"])
        for tag, value in evaluation_scalars(evaluation).items():
            writer.add_scalar(tag, value, step)

    def end_run(self, run_id: str, status: Mapping[str, Any]) -> None:
        writer = self.writers.pop(run_id)
        writer.add_text("status", _markdown_json(status), int(status.get("env_steps") or 0))
        writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
