"""One ``rlbench tune`` command: the plan, where its study lives, and the worker settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rlbench.loggers import LOGS_DIRNAME
from rlbench.tune.plan import TunePlan
from rlbench.tune.space import grid_size

_TUNE_DIRNAME = "tune"
_TRIALS_DIRNAME = "trials"
JOURNAL_FILE = "journal.log"


@dataclass(frozen=True)
class StudyLocation:
    """Where a study lives: its results folder and its storage."""

    results_root: Path
    suite: str
    study_name: str
    storage_url: str | None = None
    """An Optuna database URL; ``None``: the journal file under ``results/<suite>/tune/``."""

    @property
    def tune_dir(self) -> Path:
        return self.results_root / self.suite / _TUNE_DIRNAME

    @property
    def study_dir(self) -> Path:
        return self.tune_dir / self.study_name

    @property
    def journal_path(self) -> Path:
        return self.tune_dir / JOURNAL_FILE

    @property
    def storage_label(self) -> str:
        """The storage as optuna-dashboard takes it."""
        return self.storage_url or str(self.journal_path)

    def trial_dir(self, number: int) -> Path:
        """Where trial ``number``'s runs are recorded."""
        return self.study_dir / _TRIALS_DIRNAME / str(number)


@dataclass(frozen=True)
class TuneJob:
    """One ``rlbench tune`` command: plain data, pickled to each worker process."""

    plan: TunePlan
    location: StudyLocation
    threads: int = 1
    autoload: bool | None = None
    extra_plugins: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    """Loggers (experiment trackers) every trial's runs go to (:mod:`rlbench.tune.trackers`):
    ``--log``, else the suite's ``log``."""
    log_dir: Path | None = None
    """Where file-based trackers write; ``None``: ``RESULTS/<suite>/tune/<study>/logs``."""

    @property
    def tracker_dir(self) -> Path:
        """Where file-based trackers write: ``log_dir``, else the study's ``logs`` folder."""
        return self.log_dir if self.log_dir is not None else self.location.study_dir / LOGS_DIRNAME

    @property
    def target(self) -> int:
        """Finished trials to reach: ``trials``, or the grid's size if smaller."""
        if self.plan.sampler == "grid":
            return min(self.plan.trials, grid_size(self.plan.dims))
        return self.plan.trials


def default_study_name(plan: TunePlan) -> str:
    """``<label>-<environment ids>``: a different target gets a different study."""
    envs = "-".join(env for env, _ in plan.environments)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{plan.label}-{envs}")


def default_suite_file() -> Path:
    """``suites/tune.toml`` of the working directory, else the one of this checkout."""
    local = Path("suites") / "tune.toml"
    # rlbench/tune/job.py: the checkout is three levels up.
    return local if local.is_file() else Path(__file__).resolve().parents[2] / local
