"""Tests a plugin author writes: the agent is registered under its name, its TD target is
Double DQN's (and differs from DQN's where it should), and DQN's training loop really uses
it. Run with ``pip install -e '.[test]' && pytest`` from the package directory."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench import AgentContext, Transition
from rlbench.plugins import load_catalogue
from rlbench.suite import load_suite
from rlbench_dqn.dqn import DQN

from rlbench_double_dqn import DoubleDQN, DoubleDQNConfig

SUITE = Path(__file__).resolve().parents[1] / "suite.toml"


def make_agent(**config) -> DoubleDQN:
    """A one-lane Double DQN for 2-dimensional observations and 2 actions with linear
    Q-networks, built the way the harness builds agents (a config and an AgentContext)."""
    context = AgentContext(
        observation_space=gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
        action_space=gym.spaces.Discrete(2),
        num_envs=1,
        device=torch.device("cpu"),
        seed=0,
        rng=np.random.default_rng(0),
        total_steps=1_000,
        make_network=lambda n_in, n_out: torch.nn.Sequential(torch.nn.Linear(n_in, n_out)),
    )
    return DoubleDQN(DoubleDQNConfig(**config), context)


def set_q_values(net: torch.nn.Module, values: list[float]) -> None:
    """Make a linear Q-network output ``values`` for every observation. ``dqn`` stacks its
    lanes' networks (``rlbench.lanes``): one weight matrix per lane, biases
    ``[lanes, 1, out]``."""
    with torch.no_grad():
        net.weights[0].zero_()
        net.biases[0].copy_(torch.tensor(values))


def test_registered_by_this_package():
    catalogue = load_catalogue()
    assert not catalogue.broken, [b.describe() for b in catalogue.broken]
    provided = catalogue.agents["double_dqn"]
    assert provided.spec.agent is DoubleDQN
    assert provided.plugin.distribution == "rlbench-double-dqn"
    # It sits next to the built-in it is compared with, under its own name.
    assert catalogue.agent("dqn").agent is DQN


def test_suite_file_validates():
    suite = load_suite(SUITE, load_catalogue())
    assert [a.name for a in suite.agents] == ["dqn", "double_dqn"]


def test_target_differs_from_dqn_when_the_networks_disagree():
    agent = make_agent(gamma=0.5)
    # The online network prefers action 0; the target network values action 1 higher.
    set_q_values(agent.q, [1.0, 0.0])
    set_q_values(agent.q_target, [2.0, 5.0])
    # One lane, a minibatch of two transitions.
    reward = torch.tensor([[1.0, 1.0]])
    next_obs = torch.zeros(1, 2, 2)
    terminated = torch.tensor([[False, True]])

    with torch.no_grad():
        double = agent.targets(reward, next_obs, terminated)
        dqn = DQN.targets(agent, reward, next_obs, terminated)

    # Double DQN: the online network picks a* = 0, the target network values it at 2.0.
    torch.testing.assert_close(double, torch.tensor([[1.0 + 0.5 * 2.0, 1.0]]))
    # DQN: the target network picks and values its own maximum, 5.0.
    torch.testing.assert_close(dqn, torch.tensor([[1.0 + 0.5 * 5.0, 1.0]]))
    # At a terminal state neither bootstraps, so there they agree.
    assert double[0, 0] != dqn[0, 0] and double[0, 1] == dqn[0, 1]


def test_target_equals_dqn_when_the_networks_agree():
    agent = make_agent()
    set_q_values(agent.q, [0.0, 1.0])
    set_q_values(agent.q_target, [2.0, 5.0])
    args = (torch.tensor([[1.0]]), torch.zeros(1, 1, 2), torch.tensor([[False]]))
    with torch.no_grad():
        torch.testing.assert_close(agent.targets(*args), DQN.targets(agent, *args))


def test_training_uses_the_double_dqn_target(monkeypatch: pytest.MonkeyPatch):
    agent = make_agent(learning_starts=4, train_frequency=4, gradient_steps=2, batch_size=4)
    calls = []
    original = agent.targets

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(agent, "targets", spy)
    metrics = {}
    for step in range(8):
        t = Transition(
            obs=torch.full((1, 1, 2), 0.1 * step),  # [lanes, num_envs, obs_size]
            action=torch.tensor([[step % 2]]),
            reward=torch.tensor([[1.0]]),
            next_obs=torch.full((1, 1, 2), 0.1 * (step + 1)),
            terminated=torch.tensor([[False]]),
            truncated=torch.tensor([[False]]),
        )
        metrics = agent.observe(t) or metrics
    assert len(calls) == 2  # one training phase at step 8, two gradient steps
    assert np.isfinite(metrics["loss"]).all()  # one value per lane
