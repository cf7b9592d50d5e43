"""The policy-gradient agents compute their gradients by hand (the loss's gradient with
respect to the networks' outputs, then backpropagation through the stacked MLPs without
autograd): checked here against autograd on the losses written as Stable-Baselines3 writes
them, for every term and option (clipped surrogate, value clipping, entropy, categorical and
Gaussian policies, tanh and ReLU networks, and networks autograd backpropagates: ELU
layers, a network the stacked fast path does not take)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from rlbench_mlp import MLPConfig, build_mlp
from rlbench_pg.a2c import A2C, A2CConfig
from rlbench_pg.actor_critic import standardize
from rlbench_pg.ppo import PPO, PPOConfig
from rlbench_pg.rollout import Batch
from test_pg import make_agent as make_pg_agent
from torch import nn

from rlbench.lanes import StackedSequential, VmappedNetwork, stack_networks

LANES, OBS = 2, 3


class Residual(nn.Module):
    """A network the stacked fast path does not take (autograd backpropagates through it)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.inner, self.out = nn.Linear(n_in, 8), nn.Linear(8, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(x))
        return self.out(h + h.square())


def networks(kind: str, n_in: int, n_out: int) -> list[nn.Module]:
    torch.manual_seed(n_out)
    if kind == "residual":
        return [Residual(n_in, n_out) for _ in range(LANES)]
    config = MLPConfig(hidden_sizes=[16, 8], activation=kind)
    return [build_mlp(n_in, n_out, config) for _ in range(LANES)]


def make_agent(agent_cls, config, action_space, network="tanh"):
    agent = make_pg_agent(
        agent_cls,
        config,
        action_space,
        lanes=LANES,
        obs_size=OBS,
        make_networks=lambda i, o: networks(network, i, o),
    )
    if network == "residual":
        assert isinstance(agent.actor, VmappedNetwork)
    else:
        assert isinstance(agent.actor, StackedSequential)
    return agent


def random_batch(agent, samples: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    space = agent.context.action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = torch.randint(0, int(space.n), (LANES, samples), generator=g)
    else:
        actions = torch.randn(LANES, samples, *space.shape, generator=g)
    # Old log-probabilities far from the new ones, so that the clip range matters.
    return Batch(
        obs=torch.randn(LANES, samples, OBS, generator=g),
        actions=actions,
        values=torch.randn(LANES, samples, generator=g),
        log_probs=torch.randn(LANES, samples, generator=g) * 0.5 - 1.0,
        advantages=torch.randn(LANES, samples, generator=g),
        returns=torch.randn(LANES, samples, generator=g),
    )


def captured_gradient(agent, batch: Batch) -> torch.Tensor:
    """The gradient the agent's first gradient step computes (the optimizer stopped; the
    agent's max_grad_norm makes the clip a no-op)."""
    seen = []
    agent.optimizer.step = lambda lr: seen.append(agent.lane_params.grad.clone())
    agent.update(batch)
    return seen[0]


def reference_log_prob_entropy(agent, obs, actions):
    params = agent.actor(obs)
    if isinstance(agent.context.action_space, gym.spaces.Discrete):
        dist = torch.distributions.Categorical(logits=params)
        return dist.log_prob(actions), dist.entropy()
    std = agent.dist.log_std.unsqueeze(1).exp().expand_as(params)
    dist = torch.distributions.Normal(params, std)
    flat = actions.reshape(params.shape)
    return dist.log_prob(flat).sum(-1), dist.entropy().sum(-1)


def autograd_gradient(agent, loss: torch.Tensor) -> torch.Tensor:
    params = agent.lane_params.params
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    rows = [
        (torch.zeros_like(p) if g is None else g).reshape(LANES, -1)
        for p, g in zip(params, grads, strict=True)
    ]
    return torch.cat(rows, dim=1)


def ppo_reference_loss(agent, batch: Batch, c: PPOConfig) -> torch.Tensor:
    """Stable-Baselines3's PPO loss (ppo.py's train()), per lane."""
    clip = c.clip_range * agent.progress_remaining
    log_prob, entropy = reference_log_prob_entropy(agent, batch.obs, batch.actions)
    values = agent.critic(batch.obs).squeeze(-1)
    advantages = standardize(batch.advantages) if c.normalize_advantage else batch.advantages
    ratio = torch.exp(log_prob - batch.log_probs)
    policy_loss = -torch.min(
        advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    ).mean(1)
    if c.clip_range_vf is None:
        values_pred = values
    else:
        values_pred = batch.values + torch.clamp(
            values - batch.values, -c.clip_range_vf, c.clip_range_vf
        )
    value_loss = ((batch.returns - values_pred) ** 2).mean(1)
    return policy_loss + c.ent_coef * -entropy.mean(1) + c.vf_coef * value_loss


@pytest.mark.parametrize("network", ["tanh", "relu", "elu", "residual"])
@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))], ids=["discrete", "box"]
)
@pytest.mark.parametrize(
    "options",
    [{}, {"ent_coef": 0.05, "clip_range_vf": 0.3, "normalize_advantage": False}],
    ids=["zoo-cartpole", "entropy-value-clip"],
)
def test_ppo_gradient_is_the_autograd_gradient_of_sb3s_loss(network, space, options):
    c = PPOConfig(num_envs=2, n_steps=40, batch_size=80, n_epochs=1, max_grad_norm=1e30, **options)
    agent = make_agent(PPO, c, space, network)
    batch = random_batch(agent, 80)
    expected = autograd_gradient(agent, ppo_reference_loss(agent, batch, c))
    # The surrogate's clip cuts some samples' gradients off, the others keep theirs.
    got = captured_gradient(agent, batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert got.abs().sum() > 0


@pytest.mark.parametrize("network", ["tanh", "relu", "elu", "residual"])
@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (1,))], ids=["discrete", "box"]
)
@pytest.mark.parametrize("ent_coef", [0.0, 0.1])
def test_a2c_gradient_is_the_autograd_gradient_of_sb3s_loss(network, space, ent_coef):
    c = A2CConfig(
        num_envs=2,
        n_steps=5,
        ent_coef=ent_coef,
        normalize_advantage=True,
        max_grad_norm=1e30,
    )
    agent = make_agent(A2C, c, space, network)
    batch = random_batch(agent, 10)
    log_prob, entropy = reference_log_prob_entropy(agent, batch.obs, batch.actions)
    values = agent.critic(batch.obs).squeeze(-1)
    # Stable-Baselines3's a2c.py train().
    advantages = standardize(batch.advantages)
    loss = (
        -(advantages * log_prob).mean(1)
        + ent_coef * -entropy.mean(1)
        + c.vf_coef * ((batch.returns - values) ** 2).mean(1)
    )
    torch.testing.assert_close(
        captured_gradient(agent, batch), autograd_gradient(agent, loss), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("rows", [1, 7, 600])
@pytest.mark.parametrize("n_out", [1, 2, 40])
def test_stacked_backprop_is_autograds(activation, rows, n_out):
    """Every layer kind of the stacked fast path (wide, narrow, a value head, one row, the
    in-place tanh and the narrow product from their thresholds on) backpropagates as
    autograd does; an activation without a hand-written gradient (ELU) through autograd."""
    torch.manual_seed(0)
    config = MLPConfig(hidden_sizes=[32, 16], activation=activation)
    net = stack_networks([build_mlp(5, n_out, config) for _ in range(3)])
    x = torch.randn(3, rows, 5)
    grad_output = torch.randn(3, rows, n_out)
    out, saved = net.forward_for_backprop(x)
    torch.testing.assert_close(out, net(x))
    grads = [torch.full_like(p, float("nan")) for p in net.parameters()]
    net.backprop(saved, grad_output, grads)
    expected = torch.autograd.grad((net(x) * grad_output).sum(), list(net.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
