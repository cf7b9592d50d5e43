"""``rlbench tune``: an Optuna study over one agent's hyperparameters (docs/tuning.md).

Each trial samples a configuration and trains it with :func:`rlbench.training.execute_lanes`
on several seeds (and environments) into ``results/<suite>/tune/<study>/trials/<number>/``.
Its value is the IQM (or mean) of the runs' final evaluation returns, normalized by the
environments' reference scores when there are several environments.

Pruning. A trial's runs train in the same order for every trial (environments, then seeds),
and every evaluation is reported at the trial's environment steps so far. A lane agent
trains an environment's seeds together (lanes: the same results as one by one, faster) and
the pruner gets their mean return at step ``s`` at ``offset + seeds * s``; any other agent
trains them one after the other and seed ``k``'s evaluation at step ``s`` is reported at
``k * budget.steps + s``. Steps therefore count the environment steps a trial has consumed,
pruner warm-ups are in environment steps, and at a given step every trial has trained the
same seeds for the same number of steps, so the pruner compares like with like.

Counting. The study is done when ``trials`` trials are *finished*: complete, pruned
(diverged runs included) or failed. A trial whose worker died is marked failed and retried
once (as a new trial with the same parameters); a retried trial does not count, its retry
does. Workers claim trials under a lock (a file lock for the journal file and SQLite, an
advisory lock for PostgreSQL and MySQL) after counting finished + running + waiting
trials, so the study never ends with more finished trials than asked for, however many
workers run, and a rerun of the same command continues where the last one stopped.

Dead workers. Every trial records its worker's host, process id and process start time;
before claiming a trial a worker fails (and retries) the running trials of dead processes
on its own host. With a database URL the trials also send Optuna heartbeats, so a trial
of a machine that died is failed and retried by any other worker after the grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from rlbench import records
from rlbench.errors import RlbenchError
from rlbench.executor import lane_groups
from rlbench.plugins import Catalogue, load_catalogue
from rlbench.runspec import RunSpec
from rlbench.search_space import Choices, Dimension, FloatRange, IntRange, TunePlan, grid_size
from rlbench.stats import iqm
from rlbench.training import DivergedError, execute_lanes

TUNE_DIRNAME = "tune"
TRIALS_DIRNAME = "trials"
JOURNAL_FILE = "journal.log"
BEST_SUITE = "best.toml"
#: A trial whose worker died is retried this many times, then counts as failed.
MAX_RETRIES = 1
#: Database storages only: seconds between heartbeats, and without one before a running
#: trial counts as dead.
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
#: Seconds between looks at the study (a worker waiting for others, the progress display).
POLL_S = 1.0
#: The median pruner prunes nothing until this many trials have finished.
MEDIAN_STARTUP_TRIALS = 5
WORKER_ATTR = "worker"
SETUP_ATTR = "rlbench_setup"

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ------------------------------------------------------------------------- where


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
        return self.results_root / self.suite / TUNE_DIRNAME

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


@dataclass(frozen=True)
class TuneJob:
    """One ``rlbench tune`` command: plain data, pickled to each worker process."""

    plan: TunePlan
    location: StudyLocation
    threads: int = 1
    autoload: bool | None = None
    extra_plugins: tuple[str, ...] = ()

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
    return local if local.is_file() else Path(__file__).resolve().parents[1] / local


# ------------------------------------------------------------------------- storage


def _retry_callback() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def open_storage(location: StudyLocation) -> optuna.storages.BaseStorage:
    """The study's storage: the journal file (several local processes may share it), or
    the database at ``storage_url`` with heartbeats. Raises :class:`RlbenchError` when the
    database cannot be opened."""
    if location.storage_url is None:
        location.tune_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(location.journal_path)))
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(
                location.storage_url,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=_retry_callback(),
            )
        except ModuleNotFoundError as exc:
            raise RlbenchError(
                f"--storage: the database driver is not installed ({exc}); for PostgreSQL: "
                "pip install 'rlbench[tune-postgres]'"
            ) from None
        except Exception as exc:
            # Workers started together on a new database race to create Optuna's tables
            # (PostgreSQL: "duplicate key ... pg_type_typname_nsp_index" on CREATE TYPE);
            # the loser finds them created when it tries again.
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(exc):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise RlbenchError(f"--storage: cannot open {location.storage_url!r}: {exc}") from None
    raise AssertionError("unreachable")


SCHEMA_ATTEMPTS = 4


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same schema at the same time."""
    text = str(exc).lower()
    return type(exc).__name__ in ("IntegrityError", "ProgrammingError") and (
        "already exists" in text or "duplicate" in text
    )


class ClaimLock:
    """Serializes "count the trials, then start one" across every worker of a study, so
    that no more trials start than the study needs. A file lock for the journal file and
    SQLite; a session advisory lock for PostgreSQL and MySQL (released by the server if
    the worker dies)."""

    def __init__(self, location: StudyLocation, storage: optuna.storages.BaseStorage) -> None:
        self._file: Path | None = None
        self._engine: Any = None
        self._connection: Any = None
        self._fd: int | None = None
        self._key = f"rlbench:{location.suite}:{location.study_name}"
        if location.storage_url is None:
            self._file = location.journal_path.with_name(JOURNAL_FILE + ".claim-lock")
        elif isinstance(storage, RDBStorage):
            engine = storage.engine
            if engine.dialect.name == "sqlite":
                database = engine.url.database
                if database and database != ":memory:":
                    self._file = Path(database + ".claim-lock")
            elif engine.dialect.name in ("postgresql", "mysql"):
                self._engine = engine
            else:
                warnings.warn(
                    f"no claim lock for {engine.dialect.name}: with several workers the study "
                    "may end with up to one extra trial per worker",
                    stacklevel=2,
                )

    def __enter__(self) -> ClaimLock:
        if self._file is not None:
            import fcntl

            self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        elif self._engine is not None:
            from sqlalchemy import text

            self._connection = self._engine.connect()
            if self._engine.dialect.name == "postgresql":
                key = int.from_bytes(
                    hashlib.sha256(self._key.encode()).digest()[:8], "big", signed=True
                )
                self._connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                self._release = ("SELECT pg_advisory_unlock(:k)", {"k": key})
            else:
                name = hashlib.sha256(self._key.encode()).hexdigest()[:60]
                self._connection.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": name})
                self._release = ("SELECT RELEASE_LOCK(:k)", {"k": name})
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        elif self._connection is not None:
            from sqlalchemy import text

            sql, params = self._release
            try:
                self._connection.execute(text(sql), params)
            finally:
                self._connection.close()
                self._connection = None


# ------------------------------------------------------------------------- the study


class _GridSampler(optuna.samplers.GridSampler):
    # GridSampler.after_trial calls study.stop() once the grid is exhausted, which raises
    # outside study.optimize(); this module's workers stop by counting trials instead.
    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        pass


def make_sampler(plan: TunePlan, seed: int) -> optuna.samplers.BaseSampler:
    """The plan's sampler. Returns a TPE sampler with the constant liar (so parallel
    workers spread out), a random sampler, or a grid sampler over every choice."""
    if plan.sampler == "grid":
        space = {name: list(dim.values) for name, dim in plan.dims.items()}  # type: ignore[union-attr]
        return _GridSampler(space, seed=seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(plan: TunePlan) -> optuna.pruners.BasePruner:
    """The plan's pruner; steps (warm-up, resources) are environment steps of a trial."""
    if plan.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=plan.warmup_steps
        )
    if plan.pruner == "hyperband":
        total = plan.steps_per_trial
        first = min(max(plan.warmup_steps, plan.eval_interval, 1), total - 1)
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
            pruner=make_pruner(job.plan),
            direction="maximize",
            load_if_exists=True,
        )
        setup = study.user_attrs.get(SETUP_ATTR)
        if setup is None:
            study.set_user_attr(SETUP_ATTR, job.plan.fingerprint())
            study.set_user_attr("objective", objective_label(job.plan))
        elif setup != job.plan.fingerprint():
            raise RlbenchError(
                f"study {job.location.study_name!r} in {job.location.storage_label} was "
                "created with a different setup (agent, config, search space, environments, "
                "seeds, budget or objective), so its trials are not comparable with this "
                "one's; give --study-name NAME to start a new study"
            )
    return study


# ------------------------------------------------------------------------- counting


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


def count_trials(trials: Sequence[FrozenTrial]) -> TrialCounts:
    """Counts by state, leaving out failed trials that were retried as another trial."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "retried"), 0)
    for t in trials:
        if t.state == TrialState.FAIL and t.number in retried:
            counts["retried"] += 1
        else:
            key = {
                TrialState.COMPLETE: "complete",
                TrialState.PRUNED: "pruned",
                TrialState.FAIL: "failed",
                TrialState.RUNNING: "running",
                TrialState.WAITING: "waiting",
            }[t.state]
            counts[key] += 1
    return TrialCounts(**counts)


# ------------------------------------------------------------------------- dead workers


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def worker_identity() -> dict[str, Any]:
    """This process as recorded on the trials it runs."""
    stat = _proc_stat(os.getpid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": stat[1] if stat else None,
    }


def worker_is_dead(identity: Mapping[str, Any]) -> bool:
    """Whether the process that recorded ``identity`` is certainly gone: it ran on this
    host and its pid is free, a zombie, or now another process (a different start time)."""
    if identity.get("host") != socket.gethostname() or "pid" not in identity:
        return False  # another machine: only heartbeats can tell
    pid = int(identity["pid"])
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return True
    return identity.get("start") not in (None, stat[1])


def fail_and_retry(study: optuna.Study, number: int, reason: str) -> None:
    """Mark running trial ``number`` failed with ``reason`` and queue a retry with the same
    parameters (up to :data:`MAX_RETRIES` times). Another worker may have got there first:
    then nothing happens."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    try:
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("error", reason)
        study.tell(number, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        return
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    _retry_callback()(study, frozen)


def reap_dead_trials(study: optuna.Study) -> list[int]:
    """Fail and retry the running trials whose worker is dead (see :func:`worker_is_dead`;
    for database storages also those whose heartbeat stopped). Call under the claim lock.
    Returns the numbers of the trials failed here."""
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        identity = trial.user_attrs.get(WORKER_ATTR)
        if isinstance(identity, dict) and worker_is_dead(identity):
            reason = (
                f"worker process {identity.get('pid')} on {identity.get('host')} died during "
                "the trial"
            )
            fail_and_retry(study, trial.number, reason)
            reaped.append(trial.number)
    with warnings.catch_warnings():  # experimental since optuna 2.9, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeats: database storages only
    return reaped


# ------------------------------------------------------------------------- one trial


class TrialRunError(Exception):
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


def suggest(trial: optuna.Trial, dims: Mapping[str, Dimension]) -> dict[str, Any]:
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


def score_scale(plan: TunePlan, env: str) -> Callable[[float], float]:
    """Raw return with one environment; ``(return - random) / (solved - random)`` with
    several (the same normalization as reports')."""
    reference = plan.references.get(env)
    if not plan.normalized or reference is None:
        return lambda value: value
    random, solved = reference
    return lambda value: (value - random) / (solved - random)


def aggregate(objective: str, scores: Sequence[float]) -> float:
    """The trial's value: IQM (the mean with fewer than 4 scores) or mean of its scores."""
    return float(iqm(scores) if objective == "iqm" else np.mean(scores))


def trial_runs(plan: TunePlan, config: Mapping[str, Any]) -> list[RunSpec]:
    """A trial's runs in the order they train: environments, then seeds."""
    return [
        RunSpec(
            suite=plan.suite,
            agent=plan.agent,
            label=plan.label,
            agent_config=dict(config),
            network=dict(plan.network),
            env=env,
            env_kwargs=dict(kwargs),
            seed=seed,
            device=plan.device,
            steps=plan.steps,
            eval_interval=plan.eval_interval,
            eval_episodes=plan.eval_episodes,
            eval_max_episode_steps=plan.eval_max_episode_steps,
        )
        for env, kwargs in plan.environments
        for seed in plan.seeds
    ]


def evaluate_trial(
    trial: optuna.Trial, plan: TunePlan, trial_dir: Path, catalogue: Catalogue
) -> float:
    """Train the trial's runs and return its objective value. Raises
    :class:`optuna.TrialPruned` when pruned and :class:`TrialRunError` when a run fails.

    A lane agent trains each environment's seeds together as lanes (the same results as
    one by one, faster); any other agent trains them one after the other."""
    params = suggest(trial, plan.dims)
    config = {**plan.resolved_config, **plan.fixed, **params}
    scores: list[float] = []
    offset = 0
    for group in lane_groups(trial_runs(plan, config), catalogue, max_lanes=len(plan.seeds)):
        scale = score_scale(plan, group[0].env)
        reporter = _Reporter(trial, offset, len(group), scale)
        offset += len(group) * plan.steps
        outcomes = execute_lanes(group, trial_dir, catalogue, reporter)
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_step", reporter.pruned_at)
            raise optuna.TrialPruned(f"pruned at environment step {reporter.pruned_at}")
        for spec, outcome in zip(group, outcomes, strict=True):
            if outcome.status != records.COMPLETE:
                raise TrialRunError(spec.run_id, outcome.error or outcome.status)
            score = scale(float(outcome.final_return))  # type: ignore[arg-type]
            if not math.isfinite(score):
                raise TrialRunError(spec.run_id, f"DivergedError: final return is {score}")
            scores.append(score)
        trial.set_user_attr("scores", scores)
    return aggregate(plan.objective, scores)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
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
    trial_dir = job.location.study_dir / TRIALS_DIRNAME / str(trial.number)
    try:
        with heartbeat(storage, trial):
            value = evaluate_trial(trial, job.plan, trial_dir, catalogue)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except TrialRunError as exc:
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


# ------------------------------------------------------------------------- workers


DONE, WAIT = "done", "wait"


def claim_trial(study: optuna.Study, job: TuneJob, lock: ClaimLock) -> optuna.Trial | str:
    """Under the claim lock: fail dead workers' trials, count, and start a trial (a queued
    retry first) if the study needs one. Returns the trial, :data:`DONE` when the study
    has its finished trials, or :data:`WAIT` when the running trials of other workers may
    finish it."""
    with lock:
        reap_dead_trials(study)
        counts = count_trials(study.get_trials(deepcopy=False))
        if counts.finished >= job.target:
            return DONE
        if counts.waiting == 0 and counts.finished + counts.running >= job.target:
            return WAIT
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        return trial


def worker_loop(
    job: TuneJob,
    catalogue: Catalogue,
    worker_index: int = 0,
    after_trial: Callable[[optuna.Study], None] | None = None,
) -> None:
    """Claim and run trials until the study has ``job.target`` finished trials."""
    storage = open_storage(job.location)
    lock = ClaimLock(job.location, storage)
    study = open_study(job, storage, lock, 0)
    study.sampler = make_sampler(job.plan, sampler_seed(job, len(study.trials), worker_index))
    while True:
        claimed = claim_trial(study, job, lock)
        if claimed == DONE:
            return
        if claimed == WAIT:
            time.sleep(POLL_S)
            continue
        assert isinstance(claimed, optuna.Trial)
        run_trial(study, claimed, job, storage, catalogue)
        if after_trial is not None:
            after_trial(study)


def sampler_seed(job: TuneJob, trials_so_far: int, worker_index: int) -> int:
    """The sampler's seed: ``[tune] seed`` offset by the trials already in the study and
    the worker's index, so that resumed studies and ``--jobs`` workers do not replay the
    same random start-up configurations. With a database storage, where independent
    commands (on several machines) start at once, the process id is mixed in too."""
    seed = job.plan.seed + 7919 * trials_so_far + 104_729 * worker_index
    if job.location.storage_url is not None:
        seed += 15_485_863 * (os.getpid() % 10_007)
    return seed % 2**31


def _worker_process(job: TuneJob, worker_index: int) -> None:
    # The parent decides what Ctrl-C means; a worker only stops when told or terminated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(job.threads)
    catalogue = load_catalogue(autoload=job.autoload, extra_plugins=job.extra_plugins)
    worker_loop(job, catalogue, worker_index)


def run_workers(job: TuneJob, jobs: int, poll: Callable[[], None]) -> None:
    """Run ``jobs`` worker processes on the study until it is done; ``poll`` is called
    every :data:`POLL_S` seconds (the progress display). A worker that crashes is replaced;
    on Ctrl-C every worker is stopped and their trials failed and queued for retry."""
    ctx = mp.get_context("spawn")

    def start(index: int) -> Any:
        process = ctx.Process(target=_worker_process, args=(job, index), daemon=True)
        process.start()
        return process

    workers = {i: start(i) for i in range(jobs)}
    restarts = 0
    try:
        while workers:
            time.sleep(POLL_S)
            poll()
            for index, process in list(workers.items()):
                if process.is_alive():
                    continue
                del workers[index]
                if process.exitcode != 0 and restarts < 2 * jobs:
                    restarts += 1
                    workers[index] = start(index)
    finally:
        for process in workers.values():
            process.terminate()
        for process in workers.values():
            process.join(timeout=10)
        if workers:
            # Their trials are left running by dead processes: fail and retry them now.
            storage = open_storage(job.location)
            with ClaimLock(job.location, storage):
                study = optuna.load_study(study_name=job.location.study_name, storage=storage)
                reap_dead_trials(study)


# ------------------------------------------------------------------------- progress


class TrialPrinter:
    """Prints one line per trial as it finishes: state, value, best so far, parameters."""

    def __init__(self, write: Callable[[str], None], target: int) -> None:
        self.write = write
        self.target = target
        self.seen: set[int] = set()

    def start(self, study: optuna.Study) -> TrialCounts:
        """Note the trials finished before this command; returns the study's counts."""
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        return count_trials(trials)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        new = sorted(
            (t for t in trials if t.state.is_finished() and t.number not in self.seen),
            key=lambda t: t.datetime_complete or t.datetime_start,
        )
        if not new:
            return
        counts = count_trials(trials)
        best = best_trial(trials)
        for t in new:
            self.seen.add(t.number)
            self.write(self.line(t, counts, best))

    def line(self, t: FrozenTrial, counts: TrialCounts, best: FrozenTrial | None) -> str:
        if t.state == TrialState.COMPLETE:
            what = f"complete  value {t.value:.4g}"
        elif t.state == TrialState.PRUNED and "error" in t.user_attrs:
            what = f"pruned (diverged: {t.user_attrs['error']})"
        elif t.state == TrialState.PRUNED:
            what = f"pruned at step {t.user_attrs.get('pruned_at_step', '?')}"
        else:
            what = f"failed ({t.user_attrs.get('error', 'no error recorded')})"
        best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else 0.0
        )
        return (
            f"[{counts.finished}/{self.target}] trial {t.number} {what}; {best_text}; "
            f"{seconds:.0f} s; params {format_params(t.params)}"
        )


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: t.value) if complete else None


def format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def objective_label(plan: TunePlan) -> str:
    """What a trial's value is, in words."""
    what = "normalized score" if plan.normalized else "final evaluation return"
    envs = ", ".join(env for env, _ in plan.environments)
    return f"{plan.objective.upper()} over seeds of the {what} ({envs})"


# ------------------------------------------------------------------------- the command


@dataclass
class TuneOutcome:
    study: optuna.Study
    counts: TrialCounts
    best: FrozenTrial | None
    files: list[Path]
    notes: list[str]


def tune(
    job: TuneJob,
    catalogue: Catalogue,
    *,
    jobs: int = 1,
    write: Callable[[str], None] = print,
) -> TuneOutcome:
    """Run the study until it has ``job.target`` finished trials (continuing what earlier
    commands left), then write best.toml, trials.csv and the figures. ``KeyboardInterrupt``
    propagates after the running trials are failed and queued for retry."""
    storage = open_storage(job.location)
    lock = ClaimLock(job.location, storage)
    study = open_study(job, storage, lock, job.plan.seed)
    printer = TrialPrinter(write, job.target)
    before = printer.start(study)
    if before.finished:
        write(
            f"Resuming: {before.finished} finished trial(s) ({before.complete} complete, "
            f"{before.pruned} pruned, {before.failed} failed), {before.running} running."
        )
    if jobs <= 1:
        worker_loop(job, catalogue, 0, after_trial=printer.update)
    else:
        run_workers(job, jobs, poll=lambda: printer.update(study))
    printer.update(study)
    return finish(study, job)


def finish(study: optuna.Study, job: TuneJob) -> TuneOutcome:
    """The study's results: counts, best trial, and the files written (trials.csv,
    best.toml when a trial completed, and the figures)."""
    trials = study.get_trials(deepcopy=False)
    out = job.location.study_dir
    out.mkdir(parents=True, exist_ok=True)
    files, notes = [], []
    frame = study.trials_dataframe()
    records.atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    files.append(out / "trials.csv")
    best = best_trial(trials)
    if best is not None:
        path = out / BEST_SUITE
        records.atomic_write_text(path, best_suite_toml(job, best))
        files.append(path)
    else:
        notes.append("no trial completed: no best.toml")
    saved, skipped = save_figures(study, out)
    files += saved
    notes += skipped
    return TuneOutcome(study, count_trials(trials), best, files, notes)


# ------------------------------------------------------------------------- figures


def save_figures(study: optuna.Study, out: Path) -> tuple[list[Path], list[str]]:
    """Optuna's optimization history, parameter importances and slice plot as PNG files.
    Returns (files written, one note per figure that could not be drawn and why)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    figures: list[tuple[str, Callable[[optuna.Study], Any], int]] = [
        ("history.png", plots.plot_optimization_history, 1),
        ("importances.png", plots.plot_param_importances, 2),
        ("slice.png", plots.plot_slice, 1),
    ]
    files, notes = [], []
    for name, plot, needs in figures:
        if complete < needs:
            notes.append(f"{name}: needs {needs} complete trial(s), the study has {complete}")
            continue
        try:
            with warnings.catch_warnings():  # e.g. "importances will be equal" on few trials
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = np.atleast_1d(axes).flat[0].figure
            figure.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(figure)
            files.append(out / name)
        except Exception as exc:  # a figure must never cost the study's results
            notes.append(f"{name}: not drawn ({type(exc).__name__}: {exc})")
    return files, notes


# ------------------------------------------------------------------------- best.toml


def best_suite_name(location: StudyLocation) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{location.suite}-{location.study_name}-best")


def best_suite_toml(job: TuneJob, best: FrozenTrial) -> str:
    """A ready-to-run suite: the tuned agent (``<label>_tuned``) beside the default one
    (``<label>``), on the suite's own seeds (never tuning seeds) with the same budget."""
    plan, location = job.plan, job.location
    tuned = {**plan.base_config, **plan.fixed, **best.params}
    envs = [
        env if not kwargs else {"id": env, "kwargs": kwargs} for env, kwargs in plan.environments
    ]
    lines = [
        f"# Written by `rlbench tune`: study {location.study_name!r} ({location.storage_label}).",
        f"# Best trial: {best.number}, value {best.value:.6g} = {objective_label(plan)},",
        f"# on tuning seeds {list(plan.seeds)}. Tuned hyperparameters:",
        *(f"#   {key} = {_toml(value)}" for key, value in best.params.items()),
        "# `rlbench run` on this file re-evaluates the tuned agent against the default one on",
        "# the suite's own seeds, which the tuner never trained on.",
        f"name = {_toml(best_suite_name(location))}",
        f"description = {_toml(f'{plan.label} tuned (study {location.study_name}) vs default')}",
        f"seeds = {_toml(list(plan.eval_seeds))}",
        f"devices = {_toml(list(plan.devices))}",
        f"environments = {_toml(envs)}",
        "",
        "[budget]",
        f"steps = {plan.steps}",
        f"eval_interval = {plan.eval_interval}",
        f"eval_episodes = {plan.eval_episodes}",
    ]
    if plan.eval_max_episode_steps is not None:
        lines.append(f"eval_max_episode_steps = {plan.eval_max_episode_steps}")
    for label, config in ((f"{plan.label}_tuned", tuned), (plan.label, plan.base_config)):
        lines += [
            "",
            "[[agents]]",
            f"name = {_toml(plan.agent)}",
            f"label = {_toml(label)}",
            f"config = {_toml(config)}",
            f"network = {_toml(plan.network)}",
        ]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML inline value (strings in JSON's escapes, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
