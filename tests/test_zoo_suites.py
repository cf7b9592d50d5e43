"""The RL Zoo suites for continuous actions (suites/continuous_control.toml, suites/mujoco.toml):
they validate through the CLI where their extra is installed, and every agent × environment
pair resolves to the Zoo's settings, checked a few keys per pair.

Where the extra is missing the CLI check is skipped (with the install command), and the
settings are still checked: loading the suite must fail only on the missing extra (so every
hyperparameter validated), and the runs are then expanded from the agents as the loader
resolves them, without making the environments.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from conftest import rlbench_cmd

from rlbench.errors import SuiteError
from rlbench.runspec import RunSpec, expand
from rlbench.suite import Suite, SuiteFile, load_suite, resolve_agent

REPO = Path(__file__).resolve().parents[1]
CONTINUOUS = REPO / "suites" / "continuous_control.toml"
MUJOCO = REPO / "suites" / "mujoco.toml"

#: suite: (module its extra brings, the extra's install command)
EXTRAS = {
    CONTINUOUS: ("Box2D", 'pip install -c constraints.txt ".[box2d]"'),
    MUJOCO: ("mujoco", 'pip install -c constraints.txt ".[mujoco]"'),
}


def has_extra(path: Path) -> bool:
    return importlib.util.find_spec(EXTRAS[path][0]) is not None


def runs_of(path: Path, catalogue) -> list[RunSpec]:
    """``expand(load_suite(path))``; where the suite's extra is missing, the same runs built
    from the resolved agents, after checking that the missing extra is the only problem."""
    try:
        return expand(load_suite(path, catalogue))
    except SuiteError as error:
        if has_extra(path):
            raise
        install = EXTRAS[path][1]
        assert error.problems and all(install in p for p in error.problems), error.problems
    file = SuiteFile.model_validate(tomllib.loads(path.read_text()))
    env_ids = [env.id for env in file.environments]
    problems: list[str] = []
    agents = [
        resolve_agent(entry, f"agents[{i}]", catalogue, env_ids, problems)
        for i, entry in enumerate(file.agents)
    ]
    assert not problems and all(agents), problems
    return expand(Suite(path=path, file=file, agents=agents, source=""))


@pytest.mark.parametrize("path", [CONTINUOUS, MUJOCO], ids=lambda p: p.name)
def test_the_zoo_suite_passes_rlbench_validate(path, tmp_path):
    module, install = EXTRAS[path]
    if not has_extra(path):
        pytest.skip(f"{path.name} needs {module}: {install}")
    # From tmp_path: MuJoCo writes MUJOCO_LOG.TXT into the working directory.
    proc = rlbench_cmd("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: ok, 60 runs, trained as 12 groups" in " ".join(proc.stdout.split())
    assert "warning:" not in proc.stderr and "skipped:" not in proc.stdout


def by_pair(runs: list[RunSpec]) -> dict[tuple[str, str], RunSpec]:
    pairs: dict[tuple[str, str], list[RunSpec]] = {}
    for run in runs:
        pairs.setdefault((run.label, run.env), []).append(run)
    for (label, env), seeds in pairs.items():
        assert [r.seed for r in seeds] == [0, 1, 2, 3, 4], (label, env)
        assert all(r.agent_config == seeds[0].agent_config for r in seeds)
    return {pair: seeds[0] for pair, seeds in pairs.items()}


def check(run: RunSpec, expected: dict) -> None:
    got = {key: run.agent_config[key] for key in expected}
    assert got == expected, (run.label, run.env)


def hidden(run: RunSpec) -> tuple[list[int], str]:
    assert not run.networks  # one network for every role
    return run.network["hidden_sizes"], run.network["activation"]


LLC, MCC, PENDULUM = "LunarLander-v3", "MountainCarContinuous-v0", "Pendulum-v1"


def test_continuous_control_has_the_zoo_settings(catalogue):
    runs = by_pair(runs_of(CONTINUOUS, catalogue))
    assert set(runs) == {
        (agent, env) for agent in ("td3", "sac", "ppo", "a2c") for env in (LLC, MCC, PENDULUM)
    }
    budgets = {env: (r.steps, r.eval_interval, r.eval_episodes) for (_, env), r in runs.items()}
    assert budgets == {
        LLC: (1_000_000, 100_000, 10),
        MCC: (300_000, 10_000, 10),
        PENDULUM: (100_000, 10_000, 10),
    }
    assert runs[("sac", LLC)].env_kwargs == {"continuous": True}  # LunarLanderContinuous-v3

    # td3.yml: 400-300 everywhere; normal noise 0.1 (OU 0.5 on MountainCar, as Gaussian).
    for env in (LLC, MCC, PENDULUM):
        assert hidden(runs[("td3", env)]) == ([400, 300], "relu")
        check(runs[("td3", env)], {"train_freq": 1, "gradient_steps": 1, "learning_rate": 1e-3})
    check(
        runs[("td3", LLC)],
        {
            "gamma": 0.98,
            "buffer_size": 200_000,
            "learning_starts": 10_000,
            "exploration_noise": 0.1,
        },
    )
    check(
        runs[("td3", MCC)],
        {"exploration_noise": 0.5, "batch_size": 256, "gamma": 0.99, "learning_starts": 100},
    )
    check(
        runs[("td3", PENDULUM)],
        {
            "gamma": 0.98,
            "buffer_size": 200_000,
            "learning_starts": 10_000,
            "exploration_noise": 0.1,
        },
    )

    # sac.yml: SB3's 256-256 network on all three (one network per agent).
    for env in (LLC, MCC, PENDULUM):
        assert hidden(runs[("sac", env)]) == ([256, 256], "relu")
    check(
        runs[("sac", LLC)],
        {
            "learning_rate": 7.3e-4,
            "tau": 0.01,
            "learning_starts": 10_000,
            "batch_size": 256,
            "ent_coef": "auto",
        },
    )
    check(
        runs[("sac", MCC)],
        {
            "learning_rate": 3e-4,
            "batch_size": 512,
            "ent_coef": 0.1,
            "train_freq": 32,
            "gradient_steps": 32,
            "gamma": 0.9999,
            "tau": 0.01,
            "buffer_size": 50_000,
            "learning_starts": 0,
        },
    )
    check(
        runs[("sac", PENDULUM)],
        {
            "learning_rate": 1e-3,
            "learning_starts": 100,
            "tau": 0.005,
            "gamma": 0.99,
            "ent_coef": "auto",
        },
    )

    # ppo.yml, over SB3's PPO defaults (not rlbench's, which are the Zoo's CartPole-v1).
    for env in (LLC, MCC, PENDULUM):
        assert hidden(runs[("ppo", env)]) == ([64, 64], "tanh")
        check(
            runs[("ppo", env)],
            {"learning_rate_schedule": "constant", "clip_range_schedule": "constant"},
        )
    check(
        runs[("ppo", LLC)],
        {
            "num_envs": 16,
            "n_steps": 1024,
            "batch_size": 64,
            "gae_lambda": 0.98,
            "gamma": 0.999,
            "n_epochs": 4,
            "ent_coef": 0.01,
            "learning_rate": 3e-4,
            "normalize_obs": False,
        },
    )
    check(
        runs[("ppo", MCC)],
        {
            "num_envs": 1,
            "n_steps": 8,
            "batch_size": 256,
            "learning_rate": 7.77e-5,
            "clip_range": 0.1,
            "max_grad_norm": 5.0,
            "vf_coef": 0.19,
            "log_std_init": -3.29,
            "ortho_init": False,
            "normalize_obs": True,
            "normalize_reward": True,
        },
    )
    check(
        runs[("ppo", PENDULUM)],
        {
            "num_envs": 4,
            "n_steps": 1024,
            "batch_size": 64,
            "gamma": 0.9,
            "n_epochs": 10,
            "learning_rate": 1e-3,
            "log_std_init": 0.0,
        },
    )

    # a2c.yml.
    check(
        runs[("a2c", LLC)],
        {
            "num_envs": 4,
            "n_steps": 8,
            "gae_lambda": 0.9,
            "vf_coef": 0.4,
            "learning_rate": 7e-4,
            "learning_rate_schedule": "linear",
            "log_std_init": -2.0,
            "ortho_init": False,
            "normalize_obs": True,
            "normalize_reward": True,
        },
    )
    check(
        runs[("a2c", MCC)],
        {
            "num_envs": 4,
            "n_steps": 100,
            "learning_rate": 7e-4,
            "learning_rate_schedule": "constant",
            "log_std_init": 0.0,
            "ortho_init": False,
            "normalize_obs": True,
        },
    )
    check(
        runs[("a2c", PENDULUM)],
        {
            "num_envs": 8,
            "n_steps": 8,
            "gamma": 0.9,
            "learning_rate_schedule": "linear",
            "log_std_init": -2.0,
            "use_rms_prop": True,
            "normalize_advantage": False,
        },
    )


#: RL Zoo's n_timesteps per agent and environment (ppo.yml, a2c.yml, sac.yml, td3.yml).
ZOO_BUDGETS = {
    PENDULUM: {"ppo": 100_000, "a2c": 1_000_000, "sac": 20_000, "td3": 20_000},
    MCC: {"ppo": 20_000, "a2c": 100_000, "sac": 50_000, "td3": 300_000},
    LLC: {"ppo": 1_000_000, "a2c": 5_000_000, "sac": 500_000, "td3": 300_000},
}
#: The ones the suite's header says it cuts (a2c's, ten times the others').
CUT = {("a2c", PENDULUM), ("a2c", LLC)}


def test_continuous_control_evaluates_each_agent_at_its_zoo_budget(catalogue):
    for (label, env), run in by_pair(runs_of(CONTINUOUS, catalogue)).items():
        zoo = ZOO_BUDGETS[env][label]
        if (label, env) in CUT:
            assert zoo > run.steps
        else:
            assert zoo <= run.steps and zoo % run.eval_interval == 0, (label, env)


MUJOCO_ENVS = ("Ant-v5", "HalfCheetah-v5", "Walker2d-v5", "Hopper-v5")


def test_mujoco_has_the_zoo_settings(catalogue, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
    runs = by_pair(runs_of(MUJOCO, catalogue))
    assert set(runs) == {(a, env) for a in ("td3", "sac", "ppo") for env in MUJOCO_ENVS}
    assert {(r.steps, r.eval_interval, r.eval_episodes) for r in runs.values()} == {
        (1_000_000, 50_000, 10)
    }
    for env in MUJOCO_ENVS:
        # td3.yml and sac.yml: the same settings (their mujoco-defaults) on the four tasks.
        td3, sac, ppo = runs[("td3", env)], runs[("sac", env)], runs[("ppo", env)]
        assert hidden(td3) == ([400, 300], "relu")
        check(
            td3,
            {
                "learning_starts": 10_000,
                "exploration_noise": 0.1,
                "learning_rate": 1e-3,
                "batch_size": 256,
                "train_freq": 1,
                "gradient_steps": 1,
                "gamma": 0.99,
                "buffer_size": 1_000_000,
            },
        )
        assert hidden(sac) == ([256, 256], "relu")
        check(
            sac,
            {
                "learning_starts": 10_000,
                "learning_rate": 3e-4,
                "ent_coef": "auto",
                "batch_size": 256,
                "tau": 0.005,
                "gamma": 0.99,
            },
        )
        assert hidden(ppo) == ([256, 256], "relu")
        check(
            ppo,
            {
                "num_envs": 1,
                "normalize_obs": True,
                "normalize_reward": True,
                "learning_rate_schedule": "constant",
                "clip_range_schedule": "constant",
            },
        )
    # ppo.yml: Ant-v4 is the Zoo's mujoco-defaults (SB3's PPO), the others tuned.
    check(
        runs[("ppo", "Ant-v5")],
        {
            "n_steps": 2048,
            "batch_size": 64,
            "n_epochs": 10,
            "gamma": 0.99,
            "learning_rate": 3e-4,
            "log_std_init": 0.0,
            "ortho_init": True,
        },
    )
    check(
        runs[("ppo", "HalfCheetah-v5")],
        {
            "n_steps": 512,
            "batch_size": 64,
            "gamma": 0.98,
            "learning_rate": 2.0633e-5,
            "n_epochs": 20,
            "log_std_init": -2.0,
            "ortho_init": False,
        },
    )
    check(
        runs[("ppo", "Walker2d-v5")],
        {
            "n_steps": 512,
            "batch_size": 32,
            "gamma": 0.99,
            "learning_rate": 5.05041e-5,
            "n_epochs": 20,
            "log_std_init": 0.0,
            "ortho_init": True,
        },
    )
    check(
        runs[("ppo", "Hopper-v5")],
        {
            "n_steps": 512,
            "batch_size": 32,
            "gamma": 0.999,
            "learning_rate": 9.80828e-5,
            "n_epochs": 5,
            "log_std_init": -2.0,
            "ortho_init": False,
        },
    )


@pytest.mark.parametrize(
    ("small", "big", "env"),
    [
        ("pendulum.toml", "continuous_control.toml", "Pendulum-v1"),
        ("cartpole_pg.toml", "classic_control.toml", "CartPole-v1"),
    ],
)
def test_the_published_suites_train_their_agents_as_the_zoo_suites_do(small, big, env, catalogue):
    # The published results' suites (docs/benchmarks.md) cut a Zoo suite down to what a
    # small machine can run: each agent's settings on that environment must stay the same.
    mine = by_pair(expand(load_suite(REPO / "suites" / small, catalogue)))
    zoo = {
        (run.label, run.env): run
        for run in runs_of(REPO / "suites" / big, catalogue)
        if run.env == env and run.seed == 0
    }
    assert mine and set(mine) <= set(zoo)
    for pair, run in mine.items():
        assert run.agent_config == zoo[pair].agent_config, pair
        assert run.network == zoo[pair].network, pair
