"""The Optuna study: its sampler and pruner, opening it, and counting its trials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rlbench.errors import RlbenchError
from rlbench.tune.job import TuneJob
from rlbench.tune.plan import TunePlan, objective_label
from rlbench.tune.space import Choices
from rlbench.tune.storage import ClaimLock

#: The median pruner prunes nothing until this many trials have finished.
_MEDIAN_STARTUP_TRIALS = 5
#: The study's user attribute that holds the fingerprint of the setup it was created for.
_SETUP_ATTR = "rlbench_setup"


class _GridSampler(optuna.samplers.GridSampler):
    # GridSampler.after_trial calls study.stop() once the grid is exhausted, which raises
    # outside study.optimize(); this package's workers stop by counting trials instead.
    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        pass


def make_sampler(plan: TunePlan, seed: int) -> optuna.samplers.BaseSampler:
    """The plan's sampler. Returns a TPE sampler with the constant liar (so parallel
    workers spread out), a random sampler, or a grid sampler over every choice."""
    if plan.sampler == "grid":
        space = {
            name: list(dim.values) for name, dim in plan.dims.items() if isinstance(dim, Choices)
        }
        return _GridSampler(space, seed=seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _make_pruner(plan: TunePlan) -> optuna.pruners.BasePruner:
    """The plan's pruner; steps (warm-up, resources) are environment steps of a trial."""
    if plan.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=_MEDIAN_STARTUP_TRIALS, n_warmup_steps=plan.warmup_steps
        )
    if plan.pruner == "hyperband":
        total = plan.steps_per_trial
        # The first evaluation is the first environment's, at its eval_interval.
        first = min(max(plan.warmup_steps, plan.runs[0].eval_interval, 1), total - 1)
        return optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=total, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def open_study(
    job: TuneJob, storage: optuna.storages.BaseStorage, lock: ClaimLock, sampler_seed: int
) -> optuna.Study:
    """Create the study or load it, checking that it was created for the same tuning setup
    (agent, base config, space, environments, seeds, budget, objective): trials of two
    setups are not comparable. Raises :class:`RlbenchError` when it was not."""
    with lock:
        study = optuna.create_study(
            study_name=job.location.study_name,
            storage=storage,
            sampler=make_sampler(job.plan, sampler_seed),
            pruner=_make_pruner(job.plan),
            direction="maximize",
            load_if_exists=True,
        )
        setup = study.user_attrs.get(_SETUP_ATTR)
        if setup is None:
            study.set_user_attr(_SETUP_ATTR, job.plan.fingerprint())
            study.set_user_attr("objective", objective_label(job.plan))
        elif setup != job.plan.fingerprint():
            raise RlbenchError(
                f"study {job.location.study_name!r} in {job.location.storage_label} was "
                "created with a different setup (agent, config, search space, environments, "
                "seeds, budget or objective), so its trials are not comparable with this "
                "one's; give --study-name NAME to start a new study"
            )
    return study


@dataclass(frozen=True)
class TrialCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: int = 0
    """Failed trials of dead workers that were retried (not counted as finished)."""

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


_COUNTED_AS = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def count_trials(trials: Sequence[FrozenTrial]) -> TrialCounts:
    """Counts by state, leaving out failed trials that were retried as another trial."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "retried"), 0)
    for t in trials:
        if t.state == TrialState.FAIL and t.number in retried:
            counts["retried"] += 1
        else:
            counts[_COUNTED_AS[t.state]] += 1
    return TrialCounts(**counts)
