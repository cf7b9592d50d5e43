"""``rlbench tune``: an Optuna study over one agent's hyperparameters (docs/tuning.md).

Each trial samples a configuration and trains it with :func:`rlbench.training.execute_lanes`
on several seeds (and environments) into ``results/<suite>/tune/<study>/trials/<number>/``.
Its value is the IQM (or mean) of the runs' final evaluation returns, normalized by the
environments' reference scores when there are several environments.

The modules, in the order they import each other (each only those above it): ``space``
(search-space dimensions), ``plan`` (a suite's ``[tune]`` table resolved into a plan),
``job`` (one command: plan, study location, worker settings), ``storage`` (journal file
or database, the claim lock, retries), ``study`` (sampler, pruner, counting), ``liveness``
(trials whose worker died), ``trackers`` (each trial's runs sent to experiment trackers),
``trial`` (one trial's runs and pruning), ``workers``
(claiming and running trials), ``outputs`` (progress lines, trials.csv, best.toml,
figures) and ``command`` (:func:`tune`). Tuning reads suites; suites know nothing of it.
"""

import warnings

import optuna

from rlbench.tune.command import tune
from rlbench.tune.job import StudyLocation, TuneJob, default_study_name, default_suite_file
from rlbench.tune.outputs import BEST_SUITE
from rlbench.tune.plan import TuneOverrides, objective_label, resolve_plan
from rlbench.tune.space import Choices, Fixed, FloatRange, IntRange, parse_dimension
from rlbench.tune.storage import open_storage
from rlbench.tune.study import count_trials

# Optuna's per-trial INFO lines would interleave with rlbench's own progress lines, and the
# heartbeat and retry APIs rlbench relies on are flagged experimental (stable since 2.9).
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = [
    "BEST_SUITE",
    "Choices",
    "Fixed",
    "FloatRange",
    "IntRange",
    "StudyLocation",
    "TuneJob",
    "TuneOverrides",
    "count_trials",
    "default_study_name",
    "default_suite_file",
    "objective_label",
    "open_storage",
    "parse_dimension",
    "resolve_plan",
    "tune",
]
