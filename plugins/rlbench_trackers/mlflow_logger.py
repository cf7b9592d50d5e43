"""The ``mlflow`` logger: one MLflow run per rlbench run, through ``MlflowClient``."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlbench import LogContext, Logger, RunStart
from rlbench_trackers.common import (
    EPISODE,
    EVAL,
    as_text,
    episode_scalars,
    evaluation_scalars,
    flatten,
    metric_scalars,
    safe_key,
)

#: MLflow's limits: entries per ``log_batch`` call, and lengths of a param's value and a
#: tag's value.
BATCH_METRICS, BATCH_PARAMS, PARAM_LENGTH, TAG_LENGTH = 1000, 100, 6000, 8000
#: rlbench's run status -> MLflow's.
MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}
RUN_ID_TAG = "rlbench.run_id"
#: The metrics whose last step tells how far a resumed run's earlier attempt logged: its
#: evaluations and its episodes (each interval logs its episodes, then its evaluation).
RESUME_KEYS = (EVAL + "return_mean", EPISODE + "return")


def tracking_uri(context: LogContext) -> str:
    """``$MLFLOW_TRACKING_URI``, else the local file store ``LOG_DIR/mlruns``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or (Path(context.log_dir).resolve() / "mlruns").as_uri()
    )


class MlflowLogger(Logger):
    """MLflow runs named by run id (tagged ``rlbench.run_id``) in the experiment named after
    the suite (``$MLFLOW_EXPERIMENT_NAME`` overrides): the config as params, the provenance
    and status as tags, the metrics at the run's environment step."""

    def __init__(self, context: LogContext) -> None:
        uri = tracking_uri(context)
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 asks for this opt-in to its local file store, the one store that
            # needs nothing but a folder.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or context.suite
        self.experiment_id = self._experiment(name)
        self.runs: dict[str, str] = {}  # rlbench run id -> MLflow run id
        # A resumed run's last evaluated step in MLflow (what its killed attempt logged):
        # points up to it are not logged again. The resume is exact, so they are the very
        # values the earlier attempt logged, and MLflow would otherwise show each twice.
        self.logged_to: dict[str, int] = {}

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if missing. Processes that log to one
        experiment at once (``rlbench tune --jobs N``'s workers) may race to create it: the
        loser takes the winner's."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def start_run(self, run: RunStart) -> None:
        if run.run_id in self.runs:
            return  # resumed elsewhere (a lost Ray task): the same MLflow run goes on
        if run.resumed_from is not None:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{RUN_ID_TAG}` = '{run.run_id}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                mlflow_id = found[0].info.run_id
                self.runs[run.run_id] = mlflow_id
                self.client.update_run(mlflow_id, status="RUNNING")
                self.logged_to[run.run_id] = max(
                    (
                        m.step
                        for key in RESUME_KEYS
                        for m in self.client.get_metric_history(mlflow_id, key)
                    ),
                    default=-1,
                )
                return
        config = run.config
        tags = {
            RUN_ID_TAG: run.run_id,
            "rlbench.suite": config.get("suite", ""),
            "rlbench.agent": config.get("label", ""),
            "rlbench.env": config.get("env", ""),
            "rlbench.seed": config.get("seed", ""),
        }
        created = self.client.create_run(
            self.experiment_id,
            run_name=run.run_id,
            tags={key: as_text(value) for key, value in tags.items()},
        )
        mlflow_id = created.info.run_id
        self.runs[run.run_id] = mlflow_id
        params = [
            self.Param(safe_key(key)[:250], as_text(value)[:PARAM_LENGTH])
            for key, value in flatten(config).items()
        ]
        provenance = [
            self.RunTag(safe_key(f"provenance.{key}")[:250], as_text(value)[:TAG_LENGTH])
            for key, value in flatten(run.provenance).items()
        ]
        for i in range(0, max(len(params), len(provenance)), BATCH_PARAMS):
            self.client.log_batch(
                mlflow_id,
                params=params[i : i + BATCH_PARAMS],
                tags=provenance[i : i + BATCH_PARAMS],
            )

    def _log(self, run_id: str, values: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        now = int(time.time() * 1000)
        logged_to = self.logged_to.get(run_id, -1)
        metrics = [
            self.Metric(safe_key(key), value, now, step)
            for step, scalars in values
            if step > logged_to
            for key, value in scalars.items()
        ]
        for i in range(0, len(metrics), BATCH_METRICS):
            self.client.log_batch(self.runs[run_id], metrics=metrics[i : i + BATCH_METRICS])

    def log_episodes(self, run_id: str, episodes: Sequence[Mapping[str, Any]]) -> None:
        self._log(run_id, list(episode_scalars(episodes)))

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        self._log(run_id, [(step, metric_scalars(metrics))])

    def log_evaluation(self, run_id: str, evaluation: Mapping[str, Any]) -> None:
        self._log(run_id, [(int(evaluation["step"]), evaluation_scalars(evaluation))])

    def end_run(self, run_id: str, status: Mapping[str, Any]) -> None:
        mlflow_id = self.runs.pop(run_id)
        self.logged_to.pop(run_id, None)
        tags = [
            self.RunTag(safe_key(f"status.{key}"), as_text(value)[:TAG_LENGTH])
            for key, value in status.items()
            if value is not None
        ]
        self.client.log_batch(mlflow_id, tags=tags)
        state = MLFLOW_STATUS.get(str(status.get("status")), "FAILED")
        self.client.set_terminated(mlflow_id, status=state)

    def close(self) -> None:
        # Runs that did not end (Ctrl-C): the next `rlbench run` resumes them.
        for mlflow_id in self.runs.values():
            self.client.set_terminated(mlflow_id, status="KILLED")
        self.runs.clear()
