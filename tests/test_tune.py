"""`rlbench tune`: search spaces, the [tune] table, and real studies (journal and PostgreSQL)."""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib.figure
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from rlbench.errors import RlbenchError, SuiteError
from rlbench.suite import load_suite
from rlbench.tune import (
    Choices,
    Fixed,
    FloatRange,
    IntRange,
    StudyLocation,
    TuneJob,
    TuneOverrides,
    count_trials,
    open_storage,
    parse_dimension,
    resolve_plan,
    tune,
)
from rlbench.tune.liveness import OWNERLESS_GRACE_S, WORKER_ATTR, reap_dead_trials
from rlbench.tune.outputs import finish, save_figures
from rlbench.tune.storage import ClaimLock
from rlbench.tune.study import open_study
from rlbench.tune.workers import claim_trial
from tests.conftest import REPO, rlbench_cmd

# A dqn small enough that a 200-step run takes well under a second.
TINY_TUNE = """
name = "tt"
seeds = 2
environments = ["CartPole-v1"]

[budget]
steps = {steps}
eval_interval = {eval_interval}
eval_episodes = 2

[[agents]]
name = "dqn"
config = {{ learning_starts = 50, train_frequency = 50, gradient_steps = 2, buffer_size = 1000 }}
network = {{ name = "mlp", hidden_sizes = [16] }}

[tune]
trials = 3
seeds_per_trial = 2
warmup_steps = 0

[tune.space.dqn]
learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}
batch_size = {{ choices = [16, 32] }}
target_update_interval = {{ low = 1, high = 100 }}
"""


def tiny_tune(tmp_path: Path, steps: int = 200, eval_interval: int = 100, extra: str = "") -> Path:
    text = TINY_TUNE.format(steps=steps, eval_interval=eval_interval)
    path = tmp_path / "tune.toml"
    path.write_text(text.replace("[tune]\n", "[tune]\nuse_default_space = false\n" + extra))
    return path


def journal_study(results: Path, suite: str = "tt", study: str = "dqn-CartPole-v1"):
    storage = JournalStorage(JournalFileBackend(str(results / suite / "tune" / "journal.log")))
    return optuna.load_study(study_name=study, storage=storage)


def assert_exactly_finished(study: optuna.Study, n: int) -> None:
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    assert counts.finished == n, counts
    assert counts.running == 0 and counts.waiting == 0, counts
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


# ---------------------------------------------------------------- search-space format


def test_dimensions_parse_from_toml_values():
    assert parse_dimension({"low": 1e-4, "high": 1e-2, "log": True}, "x") == (
        FloatRange(1e-4, 1e-2, log=True),
        [],
    )
    assert parse_dimension({"low": 1, "high": 64, "step": 2}, "x") == (IntRange(1, 64, step=2), [])
    assert parse_dimension({"choices": [0.9, 0.99]}, "x") == (Choices((0.9, 0.99)), [])
    assert parse_dimension(64, "x") == (Fixed(64), [])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"low": 1, "hihg": 2}, "x.hihg: unknown key (did you mean 'high'?)"),
        ({"low": 1}, "x.high: required key is missing"),
        ({"low": 2.0, "high": 1.0}, "x: low must be less than high"),
        ({"low": 0.0, "high": 1.0, "log": True}, "x.low: a log scale needs low > 0"),
        ({"low": 1, "high": 4, "log": True, "step": 1}, "x: log and step cannot be combined"),
        ({"choices": []}, "x.choices: expected a non-empty list"),
        ({"choices": [1, 1]}, "x.choices: values must be distinct"),
        ({"choices": [1], "low": 0}, "x: give either choices or low/high, not both"),
        ([0.9, 0.99], "x: a list is ambiguous; write { choices = [...] }"),
    ],
)
def test_bad_dimensions_are_reported(raw, problem):
    dim, problems = parse_dimension(raw, "x")
    assert dim is None
    assert any(p.startswith(problem) for p in problems), problems


def check_tune(path: Path, catalogue) -> None:
    """What `rlbench tune` and `rlbench validate` check of a suite with a [tune] table."""
    resolve_plan(load_suite(path, catalogue), catalogue)


def test_tune_table_problems_are_reported_like_the_rest_of_a_suite(tmp_path, catalogue):
    path = tiny_tune(tmp_path, extra='samplr = "grid"\n')
    with pytest.raises(SuiteError) as info:
        check_tune(path, catalogue)
    assert f"{path}: tune.samplr: unknown key (did you mean 'sampler'?)" in str(info.value)

    text = path.read_text().replace('samplr = "grid"\n', "")
    text = text.replace("learning_rate =", "lerning_rate =")
    text += "gamma = { low = 0.9, high = 1.5 }\nbuffer_size = { low = 1.0, high = 5.0 }\n"
    path.write_text(text + "[tune.space.dqm]\ngamma = 0.9\n")
    with pytest.raises(SuiteError) as info:
        check_tune(path, catalogue)
    problems = info.value.problems
    assert any(
        p.startswith(
            "tune.space.dqn.lerning_rate: unknown hyperparameter (did you mean 'learning_rate'"
        )
        for p in problems
    ), problems
    assert "tune.space.dqn.gamma.high: input should be less than or equal to 1, got 1.5" in problems
    assert any(
        p.startswith("tune.space.dqn.buffer_size: buffer_size is an integer") for p in problems
    )
    assert any(
        p.startswith("tune.space.dqm: no [[agents]] entry") and "'dqn'" in p for p in problems
    )


def test_grid_needs_choices_and_tuning_seeds_stay_out_of_the_suite(tmp_path, catalogue):
    path = tiny_tune(tmp_path, extra='sampler = "grid"\n')
    path.write_text(path.read_text().replace("seeds = 2", "seeds = [0, 10001]"))
    with pytest.raises(SuiteError) as info:
        check_tune(path, catalogue)
    problems = info.value.problems
    assert any("grid sampler needs { choices = [...] }" in p for p in problems), problems
    assert any(p.startswith("seeds: [10001] are tuning seeds") for p in problems), problems


@pytest.mark.parametrize("agent", ["naive_dqn", "target_dqn", "replay_dqn", "dqn"])
def test_every_builtin_agent_has_a_valid_default_space(agent, catalogue):
    space, plugin = catalogue.search_space(agent), catalogue.search_space_plugin(agent)
    assert plugin == "dqn" and {"learning_rate", "gamma"} <= set(space)
    suite = load_suite(REPO / "suites" / "tune.toml", catalogue)
    plan = resolve_plan(suite, catalogue, TuneOverrides(agent=agent))
    assert plan.agent == agent and {"learning_rate", "gamma"} <= set(plan.dims)
    assert catalogue.search_space("no_such_agent") is None
    assert catalogue.search_space_plugin("no_such_agent") == ""


def test_shipped_tuning_suites_validate(catalogue):
    for name in ("tune.toml", "tune_grid.toml"):
        plan = resolve_plan(
            load_suite(REPO / "suites" / name, catalogue), catalogue, TuneOverrides()
        )
        assert not set(plan.seeds) & set(plan.eval_seeds)


# ---------------------------------------------------------------- studies


def test_grid_over_learning_rate_and_gamma_covers_the_nine_points(tmp_path, catalogue):
    text = (REPO / "suites" / "tune_grid.toml").read_text()
    text = text.replace("steps = 20_000", "steps = 100").replace(
        "eval_interval = 2_000", "eval_interval = 100"
    )
    text = text.replace("eval_episodes = 5", "eval_episodes = 1")
    path = tmp_path / "grid.toml"
    path.write_text(text)
    suite = load_suite(path, catalogue)
    plan = resolve_plan(suite, catalogue, TuneOverrides(trials=20, seeds_per_trial=1))
    job = TuneJob(plan, StudyLocation(tmp_path / "results", suite.name, "grid"))
    assert job.target == 9  # --trials 20 is capped at the grid's size
    lines: list[str] = []
    outcome = tune(job, catalogue, write=lines.append)
    assert_exactly_finished(outcome.study, 9)
    points = {(t.params["learning_rate"], t.params["gamma"]) for t in outcome.study.trials}
    assert points == set(itertools.product([0.001, 0.01, 0.1], [0.9, 0.95, 0.99]))
    assert len(lines) == 9 and lines[-1].startswith("[9/9] trial ")


def test_tiny_study_writes_best_toml_and_resumes_to_the_new_total(tmp_path):
    path = tiny_tune(tmp_path)
    results = tmp_path / "results"
    result = rlbench_cmd("tune", "--suite", str(path), "--results", str(results))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "[3/3] trial " in result.stdout and "Best trial " in result.stdout
    out = results / "tt" / "tune" / "dqn-CartPole-v1"
    best = out / "best.toml"
    for name in ("history.png", "importances.png", "slice.png", "trials.csv"):
        assert (out / name).stat().st_size > 0, name
    runs = sorted((out / "trials" / "0" / "runs").iterdir())
    assert len(runs) == 2  # two seeds per trial
    assert not (out / "logs").exists() and "Logging" not in result.stdout  # no tracker asked
    # dqn trains a trial's two seeds together as lanes; the pruner sees their mean return at
    # each evaluation, at the environment steps the trial has consumed (2 seeds x step).
    trial0 = journal_study(results).trials[0]
    assert sorted(trial0.intermediate_values) == [200, 400]
    at_100 = []
    for run in runs:
        assert json.loads((run / "status.json").read_text())["lanes"] == 2
        with (run / "evaluations.csv").open(newline="") as f:
            at_100 += [float(r["return_mean"]) for r in csv.DictReader(f) if r["step"] == "100"]
    assert trial0.intermediate_values[200] == pytest.approx(sum(at_100) / 2)
    check = rlbench_cmd("validate", str(best))
    assert check.returncode == 0, check.stderr
    assert "dqn_tuned__CartPole-v1__seed0__" in check.stdout
    assert "dqn__CartPole-v1__seed1__" in check.stdout  # the default, on the same fresh seeds
    first = {t.number: t.datetime_complete for t in journal_study(results).trials}

    more = rlbench_cmd("tune", "--suite", str(path), "--results", str(results), "--trials", "5")
    assert more.returncode == 0, more.stderr + more.stdout
    assert "Resuming: 3 finished trial(s)" in more.stdout
    study = journal_study(results)
    assert_exactly_finished(study, 5)
    assert {t.number: t.datetime_complete for t in study.trials[:3]} == first  # not rerun

    path.write_text(path.read_text().replace("high = 1e-2", "high = 1e-1"))
    changed = rlbench_cmd("tune", "--suite", str(path), "--results", str(results))
    assert changed.returncode == 2
    assert "created with a different setup" in changed.stderr and "--study-name" in changed.stderr


def test_two_local_worker_processes_reach_exactly_the_total(tmp_path):
    path = tiny_tune(tmp_path)
    results = tmp_path / "results"
    args = ("tune", "--suite", str(path), "--results", str(results), "--trials", "5")
    result = rlbench_cmd(*args, "--jobs", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert_exactly_finished(journal_study(results), 5)
    assert "[5/5] trial " in result.stdout


def test_a_worker_killed_mid_trial_is_failed_and_retried_on_resume(tmp_path):
    path = tiny_tune(tmp_path, steps=2000, eval_interval=500)
    results = tmp_path / "results"
    args = [
        sys.executable,
        "-m",
        "rlbench",
        "tune",
        "--suite",
        str(path),
        "--results",
        str(results),
    ]
    worker = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = results / "tt" / "tune" / "journal.log"
    try:
        deadline = time.monotonic() + 120
        running = []
        while time.monotonic() < deadline and not running:
            time.sleep(0.5)
            if journal.exists():
                # A running trial that trains already (its runs have started): one that has
                # only begun sampling its parameters would leave a partial set behind.
                running = [
                    t
                    for t in journal_study(results).get_trials(states=(TrialState.RUNNING,))
                    if list(results.glob(f"tt/tune/*/trials/{t.number}/runs/*/status.json"))
                ]
        assert running, "no trial started"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    killed = running[0].number
    assert journal_study(results).trials[killed].state == TrialState.RUNNING

    resumed = rlbench_cmd("tune", "--suite", str(path), "--results", str(results))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    study = journal_study(results)
    assert_exactly_finished(study, 3)
    dead = study.trials[killed]
    assert dead.state == TrialState.FAIL and "died during the trial" in dead.user_attrs["error"]
    [retry] = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == dead.params and retry.state.is_finished()
    assert "retried after their worker died" in resumed.stdout


# ---------------------------------------------------------------- dead workers, exact counts


def journal_job(tmp_path: Path, catalogue, trials: int) -> TuneJob:
    suite = load_suite(tiny_tune(tmp_path), catalogue)
    plan = resolve_plan(suite, catalogue, TuneOverrides(trials=trials))
    return TuneJob(plan, StudyLocation(tmp_path / "results", suite.name, "s"))


def open_job_study(job: TuneJob) -> tuple[optuna.Study, ClaimLock]:
    """The study as a worker of ``job`` holds it: one storage, its cache, the claim lock."""
    storage = open_storage(job.location)
    lock = ClaimLock(job.location, storage)
    return open_study(job, storage, lock, 0), lock


def dead_worker() -> dict:
    """The identity a worker process that has exited recorded on its trial."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return {"host": socket.gethostname(), "pid": int(done.stdout), "start": "0"}


def test_a_retry_whose_worker_dies_too_counts_once_and_the_study_stops_at_its_total(
    tmp_path, catalogue
):
    """`tune --trials 6` ended with 7 trials after kills: the retry callback appended to
    the failed retry's retry_history in place, on the reaping worker's cached copy, so that
    worker counted the retry as retried rather than failed and started a trial too many."""
    job = journal_job(tmp_path, catalogue, trials=1)
    study, lock = open_job_study(job)
    first = study.ask()
    first.set_user_attr(WORKER_ATTR, dead_worker())
    with lock:
        assert reap_dead_trials(study) == [first.number]
    retry = study.ask()  # the queued retry of the first trial
    assert study.trials[retry.number].system_attrs["failed_trial"] == first.number
    retry.set_user_attr(WORKER_ATTR, dead_worker())
    with lock:
        assert reap_dead_trials(study) == [retry.number]  # retried once already: not again

    counts = count_trials(study.get_trials(deepcopy=False))
    assert (counts.failed, counts.retried, counts.finished) == (1, 1, 1), counts
    assert claim_trial(study, job, lock) == "done"
    assert len(study.get_trials()) == 2


def test_a_running_trial_that_no_worker_claimed_is_retried_after_the_grace_period(
    tmp_path, catalogue
):
    """A kill between study.ask() and recording the worker left a running trial with no
    owner: the next `tune` said "1 running" and waited for it forever."""
    job = journal_job(tmp_path, catalogue, trials=2)
    study, lock = open_job_study(job)
    orphan = optuna.trial.create_trial(state=TrialState.RUNNING)
    orphan.datetime_start = datetime.datetime.now() - datetime.timedelta(
        seconds=OWNERLESS_GRACE_S + 5
    )
    study.add_trial(orphan)
    young = study.ask()  # not claimed yet either, but it may still be: left alone

    claimed = claim_trial(study, job, lock)  # finished 0 + running 2 >= 2 used to wait
    assert isinstance(claimed, optuna.Trial)
    trials = study.get_trials()
    assert trials[claimed.number].system_attrs["failed_trial"] == 0
    assert trials[0].state == TrialState.FAIL
    assert "no worker recorded itself on the trial" in trials[0].user_attrs["error"]
    assert trials[young.number].state == TrialState.RUNNING


def test_a_retry_that_completes_carries_nothing_of_the_failed_attempt(tmp_path, catalogue):
    """A retry inherited the failed trial's user attributes: trials.csv showed a complete
    trial with error = "worker process ... died during the trial"."""
    job = journal_job(tmp_path, catalogue, trials=1)
    study, lock = open_job_study(job)
    first = study.ask()
    first.suggest_categorical("batch_size", [16, 32])
    first.set_user_attr(WORKER_ATTR, dead_worker())
    first.set_user_attr("scores", [1.0])  # part of the trial's runs had finished
    retry = claim_trial(study, job, lock)  # reaps the first, then takes its retry
    assert isinstance(retry, optuna.Trial) and retry.params == first.params
    study.tell(retry, 3.0)

    finish(study, job)
    with (job.location.study_dir / "trials.csv").open(newline="") as f:
        rows = {int(row["number"]): row for row in csv.DictReader(f)}
    assert "died during the trial" in rows[first.number]["user_attrs_error"]
    assert rows[retry.number]["state"] == "COMPLETE"
    assert rows[retry.number]["user_attrs_error"] == ""
    assert rows[retry.number]["user_attrs_scores"] == ""
    assert study.trials[retry.number].user_attrs[WORKER_ATTR]["pid"] == os.getpid()


def test_a_figure_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """tune drew its figures with savefig on the final path: a kill left a 0-byte
    history.png."""
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, direction="maximize")
    for lr, value in [(1e-3, 1.0), (1e-2, 2.0)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
                value=value,
            )
        )
    out = tmp_path / "study"
    out.mkdir()
    (out / "history.png").write_bytes(b"the figure of the last run")

    def killed_savefig(self, fname, *args, **kwargs):
        if isinstance(fname, str | os.PathLike):
            open(fname, "wb").close()  # what savefig does first on a path: truncate it
        else:
            fname.write(b"\x89PNG")
        raise OSError("killed while drawing")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed_savefig)
    files, notes = save_figures(study, out)
    assert files == [] and len(notes) == 3 and all("killed while drawing" in n for n in notes)
    assert (out / "history.png").read_bytes() == b"the figure of the last run"
    assert [p.name for p in out.iterdir()] == ["history.png"]  # no empty or temporary file


COUNTING_SPACE = """
    import os
    from rlbench import hookimpl

    @hookimpl
    def rlbench_search_space(agent_name):
        with open(os.environ["SPACE_CALLS"], "a") as calls:
            calls.write(agent_name + "\\n")
        return None  # the dqn plugin's space applies
"""


def test_the_search_space_hook_is_asked_once_per_tune_and_validate_and_never_by_run(tmp_path):
    (tmp_path / "counting_space.py").write_text(textwrap.dedent(COUNTING_SPACE))
    suite = tmp_path / "tune.toml"
    text = TINY_TUNE.format(steps=200, eval_interval=100)
    suite.write_text(text.replace("trials = 3", "trials = 1"))
    calls, results = tmp_path / "calls.txt", tmp_path / "results"
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "SPACE_CALLS": str(calls),
    }

    def asked(*args: str) -> list[str]:
        calls.unlink(missing_ok=True)
        result = rlbench_cmd("-p", "counting_space", *args, env=env)
        assert result.returncode == 0, result.stderr + result.stdout
        return calls.read_text().split() if calls.exists() else []

    assert asked("tune", "--suite", str(suite), "--results", str(results)) == ["dqn"]
    assert asked("validate", str(suite)) == ["dqn"]
    assert asked("run", str(suite), "--results", str(results), "--no-report") == []

    # validate checks the [tune] table as tune does: one line per problem, exit code 2
    suite.write_text(suite.read_text().replace("learning_rate =", "lerning_rate ="))
    bad = rlbench_cmd("validate", str(suite))
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        f"error: {suite}: tune.space.dqn.lerning_rate: unknown hyperparameter (did you mean "
        "'learning_rate'"
    ), bad.stderr


def test_a_bare_postgresql_url_uses_the_documented_driver():
    """The README's `--storage postgresql://...` failed with "Failed to import DB access
    module" with the [tune-postgres] extra (psycopg2) installed: SQLAlchemy 2.1 reads a
    bare postgresql:// as psycopg 3. Nothing listens on port 1, so opening fails, but on
    connecting, not on a missing driver."""
    pytest.importorskip("psycopg2")
    location = StudyLocation(Path("unused"), "s", "s", "postgresql://u:p@127.0.0.1:1/db")
    with pytest.raises(RlbenchError) as info:
        open_storage(location)
    message = str(info.value)
    assert message.startswith("--storage: cannot open 'postgresql://u:p@127.0.0.1:1/db': ")
    assert "not installed" not in message and "import" not in message.lower(), message


DIVERGING = """
    import math
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    class Diverging(NaiveDQN):
        # NaN loss from step 30 whenever the learning rate is large.
        def observe(self, t):
            metrics = dict(super().observe(t))
            if self.steps >= 30 and self.config.learning_rate > 0.1:
                metrics["loss"] = [math.nan] * self.context.lanes
            return metrics

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("diverging", Diverging)]
"""


def test_a_diverging_trial_is_pruned_with_its_params_and_the_study_goes_on(tmp_path):
    (tmp_path / "diverging_plugin.py").write_text(textwrap.dedent(DIVERGING))
    suite = tmp_path / "div.toml"
    suite.write_text(
        textwrap.dedent(
            """
            name = "div"
            seeds = 1
            environments = ["CartPole-v1"]
            [budget]
            steps = 100
            eval_interval = 50
            eval_episodes = 1
            [[agents]]
            name = "diverging"
            [tune]
            sampler = "grid"
            seeds_per_trial = 1
            [tune.space.diverging]
            learning_rate = { choices = [0.001, 0.5] }
            """
        )
    )
    results = tmp_path / "results"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = rlbench_cmd(
        "-p", "diverging_plugin", "tune", "--suite", str(suite), "--results", str(results),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "pruned (diverged: run diverging__CartPole-v1__seed10000" in result.stdout
    assert "DivergedError: training diverged at step 30: loss = nan" in result.stdout
    assert "params learning_rate=0.5" in result.stdout
    study = journal_study(results, "div", "diverging-CartPole-v1")
    assert_exactly_finished(study, 2)
    by_lr = {t.params["learning_rate"]: t for t in study.trials}
    assert (
        by_lr[0.5].state == TrialState.PRUNED and "DivergedError" in by_lr[0.5].user_attrs["error"]
    )
    assert by_lr[0.001].state == TrialState.COMPLETE


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("RLBENCH_TEST_POSTGRES_URL"),
    reason="RLBENCH_TEST_POSTGRES_URL is unset; start a server with scripts/postgres.sh and "
    "export the URL it prints",
)
def test_two_workers_on_one_postgres_study_reach_exactly_the_total(tmp_path):
    url = os.environ["RLBENCH_TEST_POSTGRES_URL"]
    path = tiny_tune(tmp_path)
    study_name = f"pg-{os.getpid()}-{time.time_ns()}"
    args = [
        sys.executable, "-m", "rlbench", "tune", "--suite", str(path), "--trials", "6",
        "--storage", url, "--study-name", study_name, "--results", str(tmp_path / "results"),
    ]  # fmt: skip
    workers = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name=study_name, storage=url)
    assert_exactly_finished(study, 6)
    assert len(study.trials) == 6  # nothing lost, nothing duplicated, no surplus trial
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert pids <= {w.pid for w in workers}


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("RLBENCH_TEST_POSTGRES_URL"),
    reason="RLBENCH_TEST_POSTGRES_URL is unset; start a server with scripts/postgres.sh and "
    "export the URL it prints",
)
def test_the_readme_postgresql_url_form_works(tmp_path):
    """`--storage postgresql://...` as the README writes it (no +driver)."""
    bare = re.sub(r"^postgresql\+\w+://", "postgresql://", os.environ["RLBENCH_TEST_POSTGRES_URL"])
    study_name = f"bare-{os.getpid()}-{time.time_ns()}"
    result = rlbench_cmd(
        "tune", "--suite", str(tiny_tune(tmp_path)), "--trials", "1", "--storage", bare,
        "--study-name", study_name, "--results", str(tmp_path / "results"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"in {bare};" in result.stdout and "[1/1] trial 0 " in result.stdout


OPEN_AT = """
import sys, time
from rlbench.tune import StudyLocation, open_storage

class Location:  # what open_storage reads of a StudyLocation
    storage_url = sys.argv[1]

start = float(sys.argv[2])
while time.time() < start:
    pass
open_storage(Location())
print("opened")
"""


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("RLBENCH_TEST_POSTGRES_URL"),
    reason="RLBENCH_TEST_POSTGRES_URL is unset; start a server with scripts/postgres.sh and "
    "export the URL it prints",
)
def test_workers_opening_a_new_postgres_database_at_once_all_start():
    """Workers started together on an empty database race to create Optuna's tables; the
    loser used to die with "duplicate key value violates unique constraint
    pg_type_typname_nsp_index". Each run of this test gets its own empty schema."""
    import sqlalchemy

    url = os.environ["RLBENCH_TEST_POSTGRES_URL"]
    schema = f"race_{os.getpid()}_{time.time_ns()}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    schema_url = f"{url}?options=-csearch_path%3D{schema}"
    start = str(time.time() + 3)  # after both have imported rlbench
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, schema_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    ok = [w.returncode == 0 and "opened" in out for w, out in zip(workers, outputs, strict=True)]
    assert all(ok), outputs
