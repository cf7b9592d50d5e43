"""Experiment trackers for a study: each trial's runs logged as ``rlbench run`` logs a suite's.

``rlbench tune --log tensorboard,mlflow,wandb`` (or the suite's ``log``) sends every run of
every trial to the trackers, with the same loggers and the same records as ``rlbench run``
(:mod:`rlbench.tracking`): config (with the trial's sampled values in ``agent_config``),
provenance, training metrics, episodes and evaluations at environment steps, and the run's
end. What differs is the naming:

- the tracker's project or experiment is the **study's name** (``ppo-CartPole-v1``), not the
  suite's, so a study's trials sit together and apart from the suite's own runs;
- a run is named ``trial-<number>/<run id>``: a trial's runs sit together (TensorBoard
  shows one folder per trial), and a retried trial, whose runs have the ids of its failed
  attempt's, gets runs of its own;
- its config carries ``tune = {study, trial}`` on top of the run's ``config.json``;
- file-based trackers write under ``RESULTS/<suite>/tune/<study>/logs`` (``--log-dir``
  overrides), on the machine that runs the trial.

A pruned trial's runs end as ``failed`` with the pruner's message, as their files record
them. Each trial opens its own loggers in the worker process that runs it and closes them
when the trial ends (a tracker that fails is reported once per trial and never fails the
trial).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rlbench.loggers import LogContext
from rlbench.plugins import Catalogue
from rlbench.recording import ProgressCallback
from rlbench.tracking import Tracking
from rlbench.tune.job import TuneJob


def trial_run_name(number: int, run_id: str) -> str:
    """What the trackers call run ``run_id`` of trial ``number``: ``trial-<number>/<run id>``."""
    return f"trial-{number}/{run_id}"


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def trial_tracking(
    job: TuneJob, number: int, run_ids: Sequence[str], catalogue: Catalogue
) -> Iterator[ProgressCallback | None]:
    """The progress callback that logs trial ``number``'s runs (``run_ids``) to the job's
    trackers, open while the trial trains; ``None`` when the job logs nowhere. On leaving,
    the loggers take every event and are closed."""
    if not job.log:
        yield None
        return
    location = job.location
    context = LogContext(
        suite=location.study_name,
        suite_dir=location.study_dir,
        log_dir=job.tracker_dir,
        runs=tuple(trial_run_name(number, run_id) for run_id in run_ids),
    )
    tune_info = {"study": location.study_name, "trial": number}

    with Tracking([catalogue.logger(name) for name in job.log], context, _warn) as tracking:

        def handle(event: str, run_id: str, payload: Mapping[str, Any]) -> None:
            if event == "start":
                config = {**(payload.get("config") or {}), "tune": tune_info}
                payload = {**payload, "config": config}
            tracking.handle(event, trial_run_name(number, run_id), payload)

        yield handle


def prepare_trackers(job: TuneJob, catalogue: Catalogue) -> None:
    """Create each of the job's loggers once and close it, before any worker starts: what a
    tracker shares between runs (MLflow's experiment) then exists, and workers that start
    together do not race to create it."""
    if not job.log:
        return
    with trial_tracking(job, 0, [], catalogue):
        pass
