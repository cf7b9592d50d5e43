"""dqn computes its gradient by hand (the TD loss's derivative with respect to the taken
action's Q-value, backpropagated through the stacked MLP without autograd): checked here,
lane by lane and step by step, against autograd's gradient of
``rlbench_dqn.dqn.reference_loss`` (the loss as CleanRL writes it) on that lane's own
``nn.Module``s, for the Huber and MSE losses, ReLU and tanh MLPs, and networks autograd
backpropagates (ELU layers, a network the stacked fast path does not take); and a
Double-DQN-style subclass, whose targets read the online network at every step, trains on
the same gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlbench_dqn.dqn import DQN, DQNConfig, reference_loss
from rlbench_dqn.td import td_targets
from rlbench_mlp import MLPConfig, build_mlp
from test_pg_gradients import Residual, assert_all_close, lane_module
from torch import nn
from torch.nn import functional as F

from rlbench import AgentContext
from rlbench.lanes import (
    LaneParameters,
    ReplaySample,
    StackedNetwork,
    StackedSequential,
    VmappedNetwork,
)

LANES, OBS, ACTIONS = 3, 4, 3
NETWORKS = ["relu", "tanh", "elu", "residual"]


def network(kind: str, n_in: int = OBS, n_out: int = ACTIONS) -> nn.Module:
    """One Q-network: an MLP 32-16 with ``kind`` activations (a wide and a narrow hidden
    layer, and the narrow head, of the stacked layouts), or a :class:`Residual`."""
    if kind == "residual":
        return Residual(n_in, n_out)
    return build_mlp(n_in, n_out, MLPConfig(hidden_sizes=[32, 16], activation=kind))


def make_dqn(
    kind: str = "relu", lanes: int = LANES, agent_cls: type[DQN] = DQN, **config: Any
) -> DQN:
    """A ``lanes``-lane agent of ``kind`` networks (each lane's own initial weights) on 4
    observations and 3 actions, its target network moved away from the online one (so that a
    test sees which one the targets read), its replay filled with 2,000 random transitions."""
    torch.manual_seed(0)

    def make_networks(n_in: int, n_out: int) -> list[nn.Module]:
        return [network(kind, n_in, n_out) for _ in range(lanes)]

    context = AgentContext(
        observation_space=gym.spaces.Box(-np.inf, np.inf, shape=(OBS,), dtype=np.float32),
        action_space=gym.spaces.Discrete(ACTIONS),
        num_envs=1,
        device=torch.device("cpu"),
        seed=0,
        rng=np.random.default_rng(0),
        total_steps=10_000,
        make_network=lambda i, o: make_networks(i, o)[0],
        lanes=lanes,
        lane_seeds=tuple(range(lanes)),
        lane_rngs=tuple(np.random.default_rng(k) for k in range(lanes)),
        make_lane_networks=make_networks,
    )
    agent = agent_cls(DQNConfig(**config), context)
    assert isinstance(agent.q, VmappedNetwork if kind == "residual" else StackedSequential)
    agent.network_kind = kind
    g = torch.Generator().manual_seed(1)
    assert agent.target_params is not None
    with torch.no_grad():
        agent.target_params.flat.add_(torch.randn(agent.target_params.flat.shape, generator=g))
    fill(agent, 2000, g)
    return agent


def fill(agent: DQN, rows: int, g: torch.Generator) -> None:
    """Random transitions in every lane's replay: TD errors on both sides of the Huber
    loss's kink, 20% terminal."""
    b = agent.buffer
    lanes = b.obs.shape[0]
    b.obs[:, :rows] = torch.randn(lanes, rows, OBS, generator=g)
    b.next_obs[:, :rows] = torch.randn(lanes, rows, OBS, generator=g)
    b.action[:, :rows] = torch.randint(ACTIONS, (lanes, rows), generator=g)
    b.reward[:, :rows] = torch.randn(lanes, rows, generator=g) * 2.0
    b.terminated[:, :rows] = torch.rand(lanes, rows, generator=g) < 0.2
    b.size = b.position = rows


def lane_state(
    net: StackedNetwork, params: LaneParameters, values: torch.Tensor, lane: int
) -> dict[str, torch.Tensor]:
    """``values`` (laid out as ``params.flat``: weights, or gradients) as lane ``lane``'s own
    module's ``state_dict``: read through ``net.lane_state_dict`` (which undoes the stacked
    layouts) with ``values`` in the weights' place for the time it takes."""
    weights = params.flat.clone()
    with torch.no_grad():
        params.flat.copy_(values)
        try:
            return net.lane_state_dict(lane)
        finally:
            params.flat.copy_(weights)


def record_phase(agent: DQN) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run one training phase, recording each gradient step: its minibatch (``[lanes,
    batch, ...]``), the online weights it was computed with, its gradient before and after
    clipping (all three laid out as ``agent.q_params.flat``). Returns the steps and the
    metrics."""
    steps: list[dict[str, Any]] = []
    minibatches, apply_gradients = agent.phase_minibatches, agent.apply_gradients

    def recording_minibatches():
        for minibatch, target in minibatches():
            steps.append({"batch": minibatch})
            yield minibatch, target

    def recording_apply_gradients(max_grad_norm=None):
        steps[-1]["weights"] = agent.q_params.flat.clone()
        steps[-1]["grad"] = agent.q_params.grad.clone()
        apply_gradients(max_grad_norm)
        steps[-1]["clipped"] = agent.q_params.grad.clone()

    agent.phase_minibatches = recording_minibatches
    agent.apply_gradients = recording_apply_gradients
    metrics = agent.train_phase()
    assert len(steps) == agent.phase_gradient_steps
    return steps, metrics


def lane_q_networks(agent: DQN, step: dict[str, Any], lane: int) -> tuple[nn.Module, nn.Module]:
    """Lane ``lane``'s online network (with the weights of ``step``) and target network, as
    modules of their own."""
    online = network(agent.network_kind)
    online.load_state_dict(lane_state(agent.q, agent.q_params, step["weights"], lane))
    target = lane_module(agent.q_target, lane, lambda: network(agent.network_kind))
    return online, target


def lane_sample(batch: ReplaySample, lane: int) -> ReplaySample:
    """Lane ``lane``'s transitions, without the lane dimension (what ``reference_loss``
    takes)."""
    return ReplaySample(*(field[lane] for field in batch))


def assert_steps_follow_the_reference(
    agent: DQN,
    steps: list[dict[str, Any]],
    loss_of: Callable[[nn.Module, nn.Module, ReplaySample], torch.Tensor],
) -> list[list[float]]:
    """Every recorded step's gradient, lane by lane, is autograd's gradient of
    ``loss_of(online, target, sample)`` on that lane's own modules. Returns each step's
    reference losses, per lane."""
    losses = []
    for step in steps:
        losses.append([])
        for k in range(agent.lanes):
            online, target = lane_q_networks(agent, step, k)
            loss = loss_of(online, target, lane_sample(step["batch"], k))
            names, params = zip(*online.named_parameters(), strict=True)
            expected = dict(zip(names, torch.autograd.grad(loss, params), strict=True))
            assert all(want.abs().sum() > 0 for want in expected.values())
            got = lane_state(agent.q, agent.q_params, step["grad"], k)
            assert_all_close(got, expected, rtol=1e-5, atol=1e-6)
            losses[-1].append(loss.item())
    return losses


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_dqn_gradient_is_the_autograd_gradient_of_its_reference_loss(kind, loss):
    agent = make_dqn(kind, batch_size=64, gradient_steps=3, loss=loss)
    steps, metrics = record_phase(agent)
    c = agent.config

    def reference(online, target, sample):
        return reference_loss(online, target, sample, c.gamma, c.loss)

    losses = assert_steps_follow_the_reference(agent, steps, reference)
    # The phase's metric: each lane's mean loss over its steps.
    expected = torch.tensor(losses).mean(dim=0)
    torch.testing.assert_close(torch.tensor(metrics["loss"]), expected, rtol=1e-5, atol=0)
    # The steps moved the weights: each step is computed with its own.
    assert not torch.equal(steps[0]["weights"], steps[-1]["weights"])
    # The TD errors fall on both sides of the Huber loss's kink.
    online, target = lane_q_networks(agent, steps[0], 0)
    sample = lane_sample(steps[0]["batch"], 0)
    with torch.no_grad():
        q_taken = online(sample.obs).gather(1, sample.action.unsqueeze(1)).squeeze(1)
        next_q = target(sample.next_obs).max(dim=1).values
        error = (q_taken - td_targets(sample.reward, next_q, sample.terminated, c.gamma)).abs()
    assert (error < 1).any() and (error > 1).any()


class DoubleDQN(DQN):
    """Double DQN's targets: the online network picks the next action, the target network
    values it (so the targets depend on the online network, step by step)."""

    targets_depend_on_online_network = True

    def targets(self, reward, next_obs, terminated):
        next_action = self.q(next_obs).argmax(dim=-1, keepdim=True)
        next_q = self.q_target(next_obs).gather(-1, next_action).squeeze(-1)
        return td_targets(reward, next_q, terminated, self.config.gamma)


def double_dqn_targets(online, target, sample, gamma):
    """One lane's Double DQN targets, of its own modules."""
    with torch.no_grad():
        next_action = online(sample.next_obs).argmax(dim=1, keepdim=True)
        next_q = target(sample.next_obs).gather(1, next_action).squeeze(1)
        return sample.reward + gamma * next_q * (~sample.terminated).float()


def double_dqn_reference_loss(online, target, sample, gamma):
    td_target = double_dqn_targets(online, target, sample, gamma)
    q_taken = online(sample.obs).gather(1, sample.action.unsqueeze(1)).squeeze(1)
    return F.smooth_l1_loss(q_taken, td_target)


@pytest.mark.parametrize("kind", ["relu", "residual"])
def test_targets_that_read_the_online_network_are_computed_at_each_step(kind):
    """A subclass whose targets read the online network still trains: each step's targets
    come from the online network as the previous steps left it."""
    # A learning rate that changes some of the online network's next actions within the phase.
    agent = make_dqn(kind, agent_cls=DoubleDQN, batch_size=32, gradient_steps=4, learning_rate=0.05)
    calls = []
    targets = agent.targets
    agent.targets = lambda *args: calls.append(1) or targets(*args)
    steps, metrics = record_phase(agent)
    assert len(calls) == 4  # one call per step, none before the first
    gamma = agent.config.gamma
    losses = assert_steps_follow_the_reference(
        agent,
        steps,
        lambda online, target, sample: double_dqn_reference_loss(online, target, sample, gamma),
    )
    torch.testing.assert_close(
        torch.tensor(metrics["loss"]), torch.tensor(losses).mean(dim=0), rtol=1e-5, atol=0
    )
    # The last step's targets from the phase's first weights would differ: the check above
    # sees which weights the targets were computed with.
    last = lane_sample(steps[-1]["batch"], 0)
    first_online, target = lane_q_networks(agent, steps[0], 0)
    last_online, _ = lane_q_networks(agent, steps[-1], 0)
    assert not torch.allclose(
        double_dqn_targets(first_online, target, last, gamma),
        double_dqn_targets(last_online, target, last, gamma),
    )
