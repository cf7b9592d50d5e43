"""One trial: sample a configuration, train its runs, report to the pruner, and tell the
study how it ended.

A trial's runs are the plan's (each environment with its own budget, ``env_config`` and
network roles, as ``rlbench run`` resolves them) with the sampled values on top, and train
in the same order for every trial (environments, then seeds). Every evaluation is reported
at the trial's environment steps so far, ``offset`` being the budgets of the runs trained
before: a lane agent trains an environment's seeds together (lanes: the same results as one
by one, faster) and the pruner gets their mean return at step ``s`` at ``offset + seeds *
s``; any other agent trains them one after the other and seed ``k``'s evaluation at step
``s`` is reported at ``offset + k * steps + s`` (``steps``: that environment's budget).
Steps therefore count the environment steps a trial has consumed, pruner warm-ups are in
environment steps, and at a given step every trial has trained the same runs for the same
number of steps (every trial has the same budgets), so the pruner compares like with
like.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from rlbench import records
from rlbench.executor import lane_groups
from rlbench.plugins import Catalogue
from rlbench.recording import DivergedError, ProgressCallback
from rlbench.runspec import RunSpec
from rlbench.stats import iqm
from rlbench.tracking import fan_out
from rlbench.training import execute_lanes
from rlbench.tune.job import TuneJob
from rlbench.tune.liveness import fail_and_retry
from rlbench.tune.plan import TunePlan
from rlbench.tune.space import Choices, Dimension, FloatRange, IntRange
from rlbench.tune.storage import HEARTBEAT_INTERVAL_S
from rlbench.tune.trackers import trial_tracking


class _TrialRunError(Exception):
    """A run of the trial did not complete; ``diverged`` when it produced NaN or inf."""

    def __init__(self, run_id: str, error: str) -> None:
        self.diverged = error.startswith(DivergedError.__name__)
        super().__init__(f"run {run_id}: {error}")


class PrunedByTuner(Exception):
    """Raised from execute_run's progress callback to stop a run the pruner pruned (the run
    is then recorded as failed with this message)."""


class _Reporter:
    """The progress callback of one group of a trial's runs (one run, or a lane agent's
    seeds trained together): once every lane has reported its evaluation at step ``s``
    (after step 0), reports their mean to the trial at ``offset + lanes * s``, the trial's
    environment steps so far, and stops the runs when the pruner says so."""

    def __init__(
        self, trial: optuna.Trial, offset: int, lanes: int, scale: Callable[[float], float]
    ) -> None:
        self.trial = trial
        self.offset = offset
        self.lanes = lanes
        self.scale = scale
        self.pending: dict[int, list[float]] = {}
        self.pruned_at: int | None = None

    def __call__(self, event: str, run_id: str, payload: Mapping[str, Any]) -> None:
        if event != "eval" or payload["step"] == 0:
            return
        values = self.pending.setdefault(int(payload["step"]), [])
        values.append(self.scale(float(payload["return_mean"])))
        if len(values) < self.lanes:
            return
        del self.pending[int(payload["step"])]
        value = float(np.mean(values))
        if not math.isfinite(value):
            return
        step = self.offset + self.lanes * int(payload["step"])
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            raise PrunedByTuner(f"trial pruned at environment step {step}")


def _suggest(trial: optuna.Trial, dims: Mapping[str, Dimension]) -> dict[str, Any]:
    """Sample every tuned dimension. Returns ``{hyperparameter: value}``."""
    params: dict[str, Any] = {}
    for name, dim in dims.items():
        if isinstance(dim, FloatRange):
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, IntRange):
            params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, Choices):
            params[name] = trial.suggest_categorical(name, list(dim.values))
    return params


def _score_scale(plan: TunePlan, env: str) -> Callable[[float], float]:
    """Raw return with one environment; ``(return - random) / (solved - random)`` with
    several (the same normalization as reports')."""
    reference = plan.references.get(env)
    if not plan.normalized or reference is None:
        return lambda value: value
    random, solved = reference
    return lambda value: (value - random) / (solved - random)


def _aggregate(objective: str, scores: Sequence[float]) -> float:
    """The trial's value: IQM (the mean with fewer than 4 scores) or mean of its scores."""
    return float(iqm(scores) if objective == "iqm" else np.mean(scores))


def _trial_runs(plan: TunePlan, params: Mapping[str, Any], catalogue: Catalogue) -> list[RunSpec]:
    """A trial's runs in the order they train (environments, then seeds): the plan's runs
    (as ``rlbench run`` resolves them) with the search space's fixed and sampled values on
    top of each one's config, validated by the agent's config model as a suite's are."""
    model = catalogue.agent(plan.agent).config_model
    return [
        replace(
            run,
            agent_config=model.model_validate(plan.trial_config(run, params)).model_dump(
                mode="json"
            ),
        )
        for run in plan.runs
    ]


def _evaluate_trial(
    trial: optuna.Trial, job: TuneJob, trial_dir: Path, catalogue: Catalogue
) -> float:
    """Train the trial's runs and return its objective value. Raises
    :class:`optuna.TrialPruned` when pruned and :class:`_TrialRunError` when a run fails.

    A lane agent trains each environment's seeds together as lanes (the same results as
    one by one, faster); any other agent trains them one after the other. The runs' events
    go to the job's trackers, if any (:mod:`rlbench.tune.trackers`)."""
    plan = job.plan
    params = _suggest(trial, plan.dims)
    runs = _trial_runs(plan, params, catalogue)
    with trial_tracking(job, trial.number, [r.run_id for r in runs], catalogue) as log:
        return _train_trial(trial, plan, runs, trial_dir, catalogue, log)


def _train_trial(
    trial: optuna.Trial,
    plan: TunePlan,
    runs: Sequence[RunSpec],
    trial_dir: Path,
    catalogue: Catalogue,
    log: ProgressCallback | None,
) -> float:
    scores: list[float] = []
    offset = 0
    for group in lane_groups(runs, catalogue, max_lanes=len(plan.seeds)):
        scale = _score_scale(plan, group[0].env)
        reporter = _Reporter(trial, offset, len(group), scale)
        offset += len(group) * group[0].steps
        # The trackers first: an evaluation that prunes the trial is logged before the
        # reporter stops the runs.
        on_event = reporter if log is None else fan_out(log, reporter)
        outcomes = execute_lanes(group, trial_dir, catalogue, on_event)
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_step", reporter.pruned_at)
            raise optuna.TrialPruned(f"pruned at environment step {reporter.pruned_at}")
        for spec, outcome in zip(group, outcomes, strict=True):
            if outcome.status != records.COMPLETE:
                raise _TrialRunError(spec.run_id, outcome.error or outcome.status)
            score = scale(float(outcome.final_return))  # type: ignore[arg-type]
            if not math.isfinite(score):
                raise _TrialRunError(spec.run_id, f"DivergedError: final return is {score}")
            scores.append(score)
        trial.set_user_attr("scores", scores)
    return _aggregate(plan.objective, scores)


@contextlib.contextmanager
def _heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Send Optuna heartbeats for ``trial`` while it runs (database storages only)."""
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_INTERVAL_S):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    job: TuneJob,
    storage: optuna.storages.BaseStorage,
    catalogue: Catalogue,
) -> None:
    """Run a claimed trial and tell the study how it ended: complete with its value,
    pruned (by the pruner, or because a run diverged), or failed (any other error, with
    the error in the trial's ``error`` attribute). Only Ctrl-C escapes; the trial is then
    failed and queued for retry."""
    trial_dir = job.location.trial_dir(trial.number)
    try:
        with _heartbeat(storage, trial):
            value = _evaluate_trial(trial, job, trial_dir, catalogue)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except _TrialRunError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.PRUNED if exc.diverged else TrialState.FAIL)
    except KeyboardInterrupt:
        fail_and_retry(study, trial.number, "interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # a bug in one configuration must not end the study
        trial.set_user_attr("error", " ".join(f"{type(exc).__name__}: {exc}".split()))
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)
