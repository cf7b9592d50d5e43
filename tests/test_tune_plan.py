"""A tuning trial trains its target exactly as `rlbench run` trains it: each environment's own
budget, the agent's `env_config` and its network roles, with the sampled values on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlbench import records
from rlbench.errors import SuiteError
from rlbench.runspec import expand
from rlbench.suite import load_suite
from rlbench.tune import BEST_SUITE, StudyLocation, TuneJob, TuneOverrides, resolve_plan, tune
from tests.conftest import REPO

# A Zoo-style suite: two environments with budgets of their own, ppo with a critic role and
# settings of its own on Acrobot-v1 (one of them, learning_rate, is also tuned).
ZOO_TUNE = """
name = "zoo"
seeds = 2
environments = [
{ id = "CartPole-v1", budget = { steps = 600 } },
{ id = "Acrobot-v1", budget = { steps = 400, eval_interval = 200, eval_max_episode_steps = 40 } },
]

[budget]
steps = 1_000
eval_interval = 300
eval_episodes = 1

[[agents]]
name = "ppo"
config = { num_envs = 2, n_steps = 50, batch_size = 100, n_epochs = 1 }
network = { name = "mlp", hidden_sizes = [8] }

[agents.networks.critic]
hidden_sizes = [16, 16]

[agents.env_config.Acrobot-v1]
n_steps = 25
gamma = 0.95
learning_rate = 0.05

[tune]
trials = 2
seeds_per_trial = 2
use_default_space = false

[tune.space.ppo]
learning_rate = { low = 1e-4, high = 1e-3, log = true }
ent_coef = 0.001
"""

#: What a trial's runs differ in from `rlbench run`'s: the tuning seeds (hence the run ids).
_SEEDS = {"seed"}


def zoo(tmp_path: Path, text: str = ZOO_TUNE) -> Path:
    path = tmp_path / "zoo.toml"
    path.write_text(text)
    return path


def recorded_runs(trial_dir: Path) -> list[dict]:
    return [
        json.loads((run / records.CONFIG).read_text())
        for run in sorted((trial_dir / "runs").iterdir())
    ]


def without(spec: dict, keys: set[str], config_keys: set[str] = frozenset()) -> dict:
    out = {k: v for k, v in spec.items() if k not in keys}
    out["agent_config"] = {k: v for k, v in spec["agent_config"].items() if k not in config_keys}
    return out


def test_each_trial_trains_every_environment_as_rlbench_run_resolves_it(tmp_path, catalogue):
    path = zoo(tmp_path)
    suite = load_suite(path, catalogue)
    expected = {spec.env: spec.to_json() for spec in expand(suite) if spec.seed == 0}
    # What the suite asks of the two environments, as `rlbench run` resolves it.
    assert expected["CartPole-v1"]["steps"] == 600 and expected["Acrobot-v1"]["steps"] == 400
    assert expected["Acrobot-v1"]["agent_config"]["gamma"] == 0.95
    assert expected["CartPole-v1"]["networks"]["critic"]["hidden_sizes"] == [16, 16]

    plan = resolve_plan(suite, catalogue)
    job = TuneJob(plan, StudyLocation(tmp_path / "results", suite.name, "s"))
    outcome = tune(job, catalogue, write=lambda line: None)
    trials = outcome.study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials), trials

    for trial in trials:
        sampled = set(trial.params)
        runs = recorded_runs(job.location.trial_dir(trial.number))
        assert sorted((r["env"], r["seed"]) for r in runs) == [
            ("Acrobot-v1", 10000), ("Acrobot-v1", 10001),
            ("CartPole-v1", 10000), ("CartPole-v1", 10001),
        ]  # fmt: skip
        for run in runs:
            want = expected[run["env"]]
            got = without(run, _SEEDS, sampled | {"ent_coef"})
            assert got == without(want, _SEEDS, sampled | {"ent_coef"}), run["env"]
            # The search space is on top of config and env_config: sampled and fixed values.
            for key, value in trial.params.items():
                assert run["agent_config"][key] == value
            assert run["agent_config"]["ent_coef"] == 0.001
        # Reported at the trial's environment steps so far: each environment's seeds train
        # together (lanes), CartPole-v1 2 x 600 steps, then Acrobot-v1 2 x 400.
        assert sorted(trial.intermediate_values) == [600, 1200, 1600, 2000]

    # best.toml runs the tuned agent as its trials trained it, and the default one as the
    # suite runs it.
    best = load_suite(job.location.study_dir / BEST_SUITE, catalogue)
    trial_runs = {r["env"]: r for r in recorded_runs(job.location.trial_dir(outcome.best.number))}
    for spec in expand(best):
        got = spec.to_json()
        if spec.label == "ppo_tuned":
            assert without(got, _SEEDS | {"suite", "label"}) == without(
                trial_runs[spec.env], _SEEDS | {"suite", "label"}
            )
        else:
            want = expected[spec.env]
            assert without(got, _SEEDS | {"suite"}) == without(want, _SEEDS | {"suite"})


def test_a_tuned_environment_is_the_suites_own_with_the_tune_entrys_keys_on_top(
    tmp_path, catalogue
):
    text = ZOO_TUNE.replace(
        "use_default_space = false",
        'use_default_space = false\nenvironments = ["Acrobot-v1", '
        '{ id = "CartPole-v1", budget = { eval_interval = 200 } }, "MountainCar-v0"]',
    )
    plan = resolve_plan(load_suite(zoo(tmp_path, text), catalogue), catalogue)
    runs = {r.env: r for r in plan.runs if r.seed == plan.seeds[0]}
    assert [env for env, _ in plan.environments] == ["Acrobot-v1", "CartPole-v1", "MountainCar-v0"]
    budgets = {env: (r.steps, r.eval_interval, r.eval_max_episode_steps) for env, r in runs.items()}
    assert budgets == {
        "Acrobot-v1": (400, 200, 40),  # the suite's environment
        "CartPole-v1": (600, 200, None),  # the suite's, with the tune entry's key on top
        "MountainCar-v0": (1000, 300, None),  # not in the suite: [budget]
    }
    assert runs["Acrobot-v1"].agent_config["n_steps"] == 25
    assert runs["MountainCar-v0"].agent_config["n_steps"] == 50
    assert all(r.networks["critic"]["hidden_sizes"] == [16, 16] for r in runs.values())
    assert plan.steps_per_trial == 2 * (400 + 600 + 1000)
    # Per-environment settings are part of the study's setup; a target without any keeps
    # the fingerprint it had before they were (its studies resume).
    assert '"runs"' in plan.fingerprint()
    plain = resolve_plan(load_suite(REPO / "suites" / "tune.toml", catalogue), catalogue)
    assert '"runs"' not in plain.fingerprint()

    plan = resolve_plan(
        load_suite(zoo(tmp_path), catalogue),
        catalogue,
        TuneOverrides(environments=("Acrobot-v1",)),
    )
    [acrobot] = {(r.steps, r.agent_config["gamma"]) for r in plan.runs}
    assert acrobot == (400, 0.95)  # --env names the suite's Acrobot-v1: its budget, env_config


SKIPS = """
name = "skips"
seeds = 1
skip_incompatible = true
environments = ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"]

[budget]
steps = 600
eval_interval = 300

[[agents]]
name = "dqn"

[[agents]]
name = "ppo"

[tune]
seeds_per_trial = 1

[tune.space.ppo]
learning_rate = { low = 1e-4, high = 1e-3, log = true }
"""


def test_an_environment_the_suite_skips_for_the_agent_is_refused(tmp_path, catalogue):
    suite = load_suite(zoo(tmp_path, SKIPS), catalogue)
    # By default the target's environments are those `rlbench run` trains the agent on.
    plan = resolve_plan(suite, catalogue)
    assert [env for env, _ in plan.environments] == ["CartPole-v1", "Acrobot-v1"]
    assert [
        env for env, _ in resolve_plan(suite, catalogue, TuneOverrides(agent="ppo")).environments
    ] == ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"]
    with pytest.raises(SuiteError) as info:
        resolve_plan(suite, catalogue, TuneOverrides(environments=("Pendulum-v1",)))
    [problem] = info.value.problems
    assert problem.startswith("--env: dqn cannot train on 'Pendulum-v1' (")
    assert problem.endswith(
        "skip_incompatible leaves it out of the suite's runs, so tune on another environment"
    )
