"""Per-environment settings in one suite, skipped incompatible pairs and networks by role:
what a suite says reaches the runs, and every mistake is one line naming file and key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlbench import records
from rlbench.agent import AgentContext
from rlbench.building import build_agent
from rlbench.errors import SuiteError
from rlbench.executor import write_manifest
from rlbench.runspec import expand
from rlbench.suite import load_suite
from tests.conftest import rlbench_cmd

HEADER = """
name = "s"
seeds = 1
environments = {environments}
[budget]
steps = 1000
eval_interval = 500
"""


def suite_text(environments: str, agents: str) -> str:
    return HEADER.format(environments=environments) + agents


def problems_of(path, catalogue) -> list[str]:
    with pytest.raises(SuiteError) as info:
        load_suite(path, catalogue)
    assert all(
        line.startswith(f"error: {path}: ") or line.startswith(f"{path}: ")
        for line in str(info.value).splitlines()
    )
    return info.value.problems


def by_env(runs):
    return {r.env: r for r in runs}


def test_an_environment_budget_is_merged_over_the_suites(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1", { id = "Acrobot-v1", budget = { steps = 4000, eval_episodes = 3 } }]',
            '[[agents]]\nname = "dqn"\n',
        )
    )
    runs = by_env(expand(load_suite(path, catalogue)))
    cart, acro = runs["CartPole-v1"], runs["Acrobot-v1"]
    assert (cart.steps, cart.eval_interval, cart.eval_episodes) == (1000, 500, 10)
    assert (acro.steps, acro.eval_interval, acro.eval_episodes) == (4000, 500, 3)
    # An environment without a budget of its own keeps the run id it had without the key.
    plain = write_suite(suite_text('["CartPole-v1"]', '[[agents]]\nname = "dqn"\n'), "p.toml")
    assert cart.run_id == expand(load_suite(plain, catalogue))[0].run_id


def test_agent_overrides_per_environment(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1", "Acrobot-v1"]',
            """
        [[agents]]
        name = "dqn"
        config = { learning_rate = 1e-3, gamma = 0.98 }
        [agents.env_config.Acrobot-v1]
        learning_rate = 6.3e-4
        gradient_steps = -1
    """,
        )
    )
    runs = by_env(expand(load_suite(path, catalogue)))
    assert runs["CartPole-v1"].agent_config["learning_rate"] == 1e-3
    acro = runs["Acrobot-v1"].agent_config
    assert (acro["learning_rate"], acro["gamma"], acro["gradient_steps"]) == (6.3e-4, 0.98, -1)


def test_bad_per_environment_settings_are_named_by_key(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1", { id = "Acrobot-v1", budget = { steps = 0, eval_intervall = 5 } }]',
            """
        [[agents]]
        name = "dqn"
        [agents.env_config.Acrobot-v2]
        learning_rate = 1e-3
        [agents.env_config.CartPole-v1]
        learning_rat = 1e-3
        gamma = "high"
        """,
        )
    )
    assert problems_of(path, catalogue) == [
        "environments[1].budget.steps: input should be greater than 0, got 0",
        "environments[1].budget.eval_intervall: unknown key (did you mean 'eval_interval'?); "
        "expected one of: eval_episodes, eval_interval, eval_max_episode_steps, steps",
    ]
    path.write_text(path.read_text().replace("steps = 0, eval_intervall = 5", "steps = 10"))
    problems = problems_of(path, catalogue)
    assert problems[0] == (
        "agents[0].env_config.Acrobot-v2: 'Acrobot-v2' is not an environment of this suite "
        "(did you mean 'Acrobot-v1'?); key it by an id in `environments`"
    )
    gamma, typo = sorted(problems[1:])
    assert gamma == (
        "agents[0].env_config.CartPole-v1.gamma: write a number, not a string, got 'high'"
    )
    assert typo.startswith(
        "agents[0].env_config.CartPole-v1.learning_rat: unknown key (did you mean "
        "'learning_rate' or 'learning_starts'?); expected one of: batch_size, "
    )


def test_an_environments_own_budget_warns_by_its_key(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1", { id = "Acrobot-v1", budget = { steps = 100 } }]',
            '[[agents]]\nname = "dqn"\n',
        )
    )
    assert load_suite(path, catalogue).warnings == [
        f"{path}: environments[1].budget.eval_interval: 500 is more than its steps (100), so "
        "only the final evaluation runs; lower it for a learning curve"
    ]


AGENTS = '[[agents]]\nname = "dqn"\n[[agents]]\nname = "ppo"\n'


def test_skip_incompatible_leaves_out_the_pairs_and_lists_them(write_suite, catalogue, tmp_path):
    refused = write_suite(suite_text('["CartPole-v1", "Pendulum-v1"]', AGENTS))
    [problem] = problems_of(refused, catalogue)
    assert problem.startswith("agents[0] on environments[1]: dqn cannot train on 'Pendulum-v1'")

    path = write_suite("skip_incompatible = true\n" + refused.read_text(), "skip.toml")
    suite = load_suite(path, catalogue)
    [pair] = suite.skipped
    assert pair.describe().startswith("dqn on 'Pendulum-v1': ")
    runs = expand(suite)
    assert [(r.label, r.env) for r in runs] == [
        ("dqn", "CartPole-v1"),
        ("ppo", "CartPole-v1"),
        ("ppo", "Pendulum-v1"),
    ]
    # The results folder's manifest keeps them for the report.
    write_manifest(suite, runs, tmp_path, catalogue)
    manifest = records.SuiteManifest.read(tmp_path)
    assert manifest is not None and manifest.skipped == (pair.describe(),)

    result = rlbench_cmd("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert f"  skipped: {pair.describe()}\n" in result.stdout
    assert "3 runs" in result.stdout


def test_skip_incompatible_with_nothing_left_is_refused(write_suite, catalogue):
    path = write_suite(
        "skip_incompatible = true\n" + suite_text('["Pendulum-v1"]', '[[agents]]\nname = "dqn"\n')
    )
    assert problems_of(path, catalogue) == [
        "skip_incompatible: no agent can train on any environment of this suite, so nothing "
        "would run; pair each agent with an environment it supports"
    ]


def test_networks_by_role_merge_over_network(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1"]',
            """
        [[agents]]
        name = "ppo"
        [agents.networks.critic]
        hidden_sizes = [32]
        [[agents]]
        name = "ppo"
        label = "same"
        networks = { actor = { hidden_sizes = [64, 64] } }
    """,
        )
    )
    suite = load_suite(path, catalogue)
    shaped, same = suite.agents
    assert shaped.network == {"name": "mlp", "hidden_sizes": [64, 64], "activation": "tanh"}
    assert shaped.networks == {
        "critic": {"name": "mlp", "hidden_sizes": [32], "activation": "tanh"}
    }
    # A role shaped as `network` already is changes nothing, not even the run id.
    assert same.networks == {}
    plain = write_suite(suite_text('["CartPole-v1"]', '[[agents]]\nname = "ppo"\n'), "p.toml")
    [run] = expand(load_suite(plain, catalogue))
    shaped_run, same_run = expand(suite)
    assert same_run.run_id.split("__")[-1] == run.run_id.split("__")[-1]
    assert shaped_run.run_id != run.run_id
    assert "networks" in shaped_run.to_json() and "networks" not in run.to_json()


def test_bad_roles_are_named_by_key(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1"]',
            """
        [[agents]]
        name = "ppo"
        [agents.networks.actr]
        hidden_sizes = [8]
        [agents.networks.critic]
        hidden_sizes = [0]
        [[agents]]
        name = "dqn"
        networks = { q = { hidden_sizes = [8] } }
    """,
        )
    )
    assert problems_of(path, catalogue) == [
        "agents[0].networks.actr: ppo builds no 'actr' network (did you mean 'actor'?); its "
        "roles: actor, critic",
        "agents[0].networks.critic.hidden_sizes[0]: input should be greater than or equal to "
        "1, got 0",
        "agents[1].networks.q: dqn builds one kind of network: shape it with agents[1].network",
    ]


def test_the_agent_builds_each_roles_network(write_suite, catalogue):
    path = write_suite(
        suite_text(
            '["CartPole-v1"]',
            """
        [[agents]]
        name = "ppo"
        networks = { critic = { hidden_sizes = [8] } }
    """,
        )
    )
    [spec] = expand(load_suite(path, catalogue))
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    config = catalogue.agent("ppo").config_model.model_validate(spec.agent_config)
    agent = build_agent([spec], catalogue, config, env, [np.random.default_rng(0)])

    def widths(network):
        return [w.shape[0] for k, w in network.lane_state_dict(0).items() if "weight" in k]

    assert widths(agent.actor) == [64, 64, 2] and widths(agent.critic) == [8, 1]
    with pytest.raises(ValueError, match="asked for a 'value' network"):
        agent.context.make_network(4, 1, role="value")
    env.close()


def test_a_hand_made_context_takes_a_role_with_two_argument_factories():
    context = AgentContext(
        observation_space=None,  # type: ignore[arg-type]
        action_space=None,  # type: ignore[arg-type]
        num_envs=1,
        device=torch.device("cpu"),
        seed=0,
        rng=np.random.default_rng(0),
        total_steps=1,
        make_network=lambda i, o: torch.nn.Linear(i, o),
    )
    assert context.make_network(3, 2, role="actor").out_features == 2
    [net] = context.make_lane_networks(3, 1, role="critic")
    assert net.in_features == 3
