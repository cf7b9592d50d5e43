"""Suite files: validation reports every problem at once, with file, key and fix."""

from __future__ import annotations

import pytest

from rlbench.errors import SuiteError
from rlbench.runspec import expand
from rlbench.suite import load_suite


def test_the_shipped_suites_are_valid(catalogue):
    for name in ("cartpole", "tiny"):
        suite = load_suite(f"suites/{name}.toml", catalogue)
        assert suite.name == name
    cartpole = load_suite("suites/cartpole.toml", catalogue)
    runs = expand(cartpole)
    assert len(runs) == 4 * 5  # agents × seeds
    assert {r.agent for r in runs} == {"naive_dqn", "target_dqn", "replay_dqn", "dqn"}


def test_classic_control_benchmarks_every_built_in_agent_where_it_can(catalogue):
    suite = load_suite("suites/classic_control.toml", catalogue)
    runs = expand(suite)
    pairs = {(r.label, r.env) for r in runs}
    assert len(pairs) == 6 * 3 + 2 * 2 and len(runs) == 5 * len(pairs)
    assert {(p.label, p.env) for p in suite.skipped} == {
        (dqn, env)
        for dqn in ("naive_dqn", "target_dqn", "replay_dqn", "dqn")
        for env in ("Pendulum-v1", "MountainCarContinuous-v0")
    }
    steps = {r.env: r.steps for r in runs}
    assert steps["MountainCar-v0"] == 120_000 and steps["CartPole-v1"] == 100_000
    config = {(r.label, r.env): r.agent_config for r in runs}
    assert config[("dqn", "Acrobot-v1")]["gradient_steps"] == -1
    assert config[("ppo", "Pendulum-v1")]["n_steps"] == 1024
    assert config[("ppo", "CartPole-v1")]["n_steps"] == 32  # the Zoo's CartPole-v1 default


def test_defaults_are_resolved_into_the_config(write_suite, catalogue):
    suite = load_suite(write_suite(), catalogue)
    naive, dqn = suite.agents
    assert naive.config["learning_rate"] == 1e-3
    assert naive.network == {"name": "mlp", "hidden_sizes": [64, 32], "activation": "relu"}
    assert dqn.config["learning_starts"] == 100 and dqn.config["gamma"] == 0.99
    assert dqn.network["hidden_sizes"] == [16]


def problems_of(path, catalogue) -> list[str]:
    with pytest.raises(SuiteError) as info:
        load_suite(path, catalogue)
    assert all(str(path) in line for line in str(info.value).splitlines())
    return info.value.problems


def test_invalid_toml_names_file_and_line(write_suite, catalogue):
    path = write_suite("seeds = 2\nname = cartpole\n")
    [problem] = problems_of(path, catalogue)
    assert problem.startswith("invalid TOML") and "line 2" in problem


def test_missing_file(tmp_path, catalogue):
    [problem] = problems_of(tmp_path / "nope.toml", catalogue)
    assert "cannot read the file" in problem


def test_every_structural_problem_is_reported_at_once(write_suite, catalogue):
    path = write_suite("""
        name = "bad name!"
        seeds = 0
        devices = ["gpu"]
        environments = []
        [[agents]]
        name = "dqm"
        colour = "red"
        [budget]
        steps = -5
    """)
    problems = problems_of(path, catalogue)
    text = "\n".join(problems)
    assert "name: use up to 64 letters, digits, '_', '.' and '-', starting with a letter" in text
    assert "(it names a folder), got 'bad name!'" in text
    assert "seeds: expected a count of seeds" in text
    assert 'devices: expected "cpu", "cuda", "cuda:N" or "auto"' in text
    assert "environments: list should have at least 1 item" in text
    assert "agents[0].colour: unknown key" in text
    assert "budget.steps: input should be greater than 0, got -5" in text
    assert "budget.eval_interval: required key is missing" in text
    assert "agents[0].name: unknown agent 'dqm' (did you mean 'dqn'" in text
    assert len(problems) >= 8


def test_hyperparameters_are_checked_against_the_agent(write_suite, catalogue):
    path = write_suite("""
        name = "x"
        seeds = [0, 1]
        environments = ["CartPole-v1", "CartPol-v1"]
        [budget]
        steps = 100
        eval_interval = 50
        [[agents]]
        name = "dqn"
        config = { learning_rate = "fast", gama = 0.9, batch_size = 0 }
        network = { name = "mlp", hidden_sizes = "big" }
        [[agents]]
        name = "target_dqn"
        network = { name = "transformer" }
        [[agents]]
        name = "dqn"
    """)
    text = "\n".join(problems_of(path, catalogue))
    assert "agents[0].config.learning_rate: write a number, not a string" in text
    assert "got 'fast'" in text
    assert "agents[0].config.gama: unknown key (did you mean 'gamma'?)" in text
    assert "agents[0].config.batch_size: input should be greater than or equal to 1" in text
    assert "agents[0].network.hidden_sizes: input should be a valid list" in text
    assert "agents[1].network.name: unknown network 'transformer'" in text
    assert 'agents[2].label: "dqn" is already used by agents[0]' in text
    assert "environments[1]: unknown environment 'CartPol-v1' (did you mean 'CartPole-v1'" in text


def test_labels_allow_two_configs_of_one_agent(write_suite, catalogue):
    path = write_suite("""
        name = "x"
        seeds = 1
        environments = ["CartPole-v1"]
        [budget]
        steps = 100
        eval_interval = 50
        [[agents]]
        name = "naive_dqn"
        label = "naive_mse"
        [[agents]]
        name = "naive_dqn"
        label = "naive_huber"
        config = { loss = "huber" }
    """)
    runs = expand(load_suite(path, catalogue))
    assert [r.label for r in runs] == ["naive_mse", "naive_huber"]
    assert runs[0].run_id != runs[1].run_id


def test_run_ids_of_plain_names_are_as_before_and_others_are_slugs(catalogue):
    from rlbench.suite import slug

    for spec in expand(load_suite("suites/cartpole.toml", catalogue)):
        # The layout existing results folders have: label, env, seed, device, hash.
        assert spec.run_id == (
            f"{spec.label}__{spec.env}__seed{spec.seed}__{spec.device}__{spec.config_hash}"
        )
    for name in ("dqn", "CartPole-v1", "naive_mse", "a.b_c-1"):
        assert slug(name) == name
    assert slug("ALE/Pong-v5") == "ALE-Pong-v5"
    assert slug("../x") == "x" and slug("/tmp/x") == "tmp-x" and slug("a/../../b") == "a-..-..-b"
    assert slug("..") == "_" and slug("x" * 100) == "x" * 64


SPACES_PLUGIN = """
    from rlbench import AgentSpec, hookimpl
    from rlbench_dqn.naive_dqn import NaiveDQN

    class Picky(NaiveDQN):
        @classmethod
        def check_spaces(cls, observation_space, action_space):
            if action_space.shape != ():
                return "it needs a discrete action space"
            return None

    class Crashing(NaiveDQN):
        @classmethod
        def check_spaces(cls, observation_space, action_space):
            raise RuntimeError("boom")

    @hookimpl
    def rlbench_register_agents():
        return [AgentSpec("picky", Picky), AgentSpec("crashing", Crashing)]
"""


def test_environments_are_made_once_and_agents_check_their_spaces(write_suite, inline_plugin):
    catalogue = inline_plugin("spaces_plugin", SPACES_PLUGIN)
    path = write_suite("""
        name = "x"
        seeds = 1
        environments = ["CartPole-v1", "Pendulum-v1", { id = "Acrobot-v1", kwargs = { g = 1 } }]
        [budget]
        steps = 100
        eval_interval = 50
        [[agents]]
        name = "picky"
        [[agents]]
        name = "crashing"
    """)
    problems = problems_of(path, catalogue)
    assert problems[0].startswith(
        "environments[2]: 'Acrobot-v1' cannot be made with kwargs {'g': 1}: TypeError: "
    )
    assert problems[0].endswith("; check the kwargs against the environment's constructor")
    assert problems[1:] == [
        "agents[0] on environments[1]: picky cannot train on 'Pendulum-v1': it needs a "
        "discrete action space",
        "agents[1] on environments[0]: crashing cannot train on 'CartPole-v1': its "
        "check_spaces raised RuntimeError: boom",
        "agents[1] on environments[1]: crashing cannot train on 'Pendulum-v1': its "
        "check_spaces raised RuntimeError: boom",
    ]


def test_an_evaluation_interval_beyond_the_budget_is_a_warning(write_suite, catalogue):
    suite = load_suite(write_suite(steps=300, eval_interval=1000), catalogue)
    assert suite.warnings == [
        f"{suite.path}: budget.eval_interval: 1000 is more than budget.steps (300), so only "
        "the final evaluation runs; lower it for a learning curve"
    ]
    assert load_suite(write_suite(), catalogue).warnings == []
