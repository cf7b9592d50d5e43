"""The policy-gradient agents compute their gradients by hand (the loss's gradient with
respect to the networks' outputs, then backpropagation through the stacked MLPs without
autograd): checked here, lane by lane, against autograd's gradient of the agent's
``reference_loss`` (``rlbench_pg.ppo.reference_loss``, ``rlbench_pg.a2c.reference_loss``:
the losses as Stable-Baselines3 writes them) on that lane's own ``nn.Module``s, for every
term and option (clipped surrogate, value clipping, entropy, categorical and Gaussian
policies, tanh and ReLU networks, and networks autograd backpropagates: ELU layers, a network
the stacked fast path does not take)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import pytest
import torch
from rlbench_mlp import MLPConfig, build_mlp
from rlbench_pg import a2c, ppo
from rlbench_pg.a2c import A2C, A2CConfig
from rlbench_pg.actor_critic import scheduled
from rlbench_pg.ppo import PPO, PPOConfig
from rlbench_pg.rollout import Batch
from test_pg import make_agent as make_pg_agent
from torch import nn

from rlbench.lanes import StackedNetwork, StackedSequential, VmappedNetwork, stack_networks

LANES, OBS = 2, 3


class Residual(nn.Module):
    """A network the stacked fast path does not take (autograd backpropagates through it)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.inner, self.out = nn.Linear(n_in, 8), nn.Linear(8, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(x))
        return self.out(h + h.square())


def network(kind: str, n_in: int, n_out: int) -> nn.Module:
    """One network: an MLP 16-8 with ``kind`` activations, or a :class:`Residual`."""
    if kind == "residual":
        return Residual(n_in, n_out)
    return build_mlp(n_in, n_out, MLPConfig(hidden_sizes=[16, 8], activation=kind))


def networks(kind: str, n_in: int, n_out: int, lanes: int = LANES) -> list[nn.Module]:
    torch.manual_seed(n_out)
    return [network(kind, n_in, n_out) for _ in range(lanes)]


def make_agent(agent_cls, config, action_space, network="tanh", lanes=LANES):
    agent = make_pg_agent(
        agent_cls,
        config,
        action_space,
        lanes=lanes,
        obs_size=OBS,
        make_networks=lambda i, o: networks(network, i, o, lanes),
    )
    agent.network_kind = network
    if network == "residual":
        assert isinstance(agent.actor, VmappedNetwork)
    else:
        assert isinstance(agent.actor, StackedSequential)
    return agent


def random_batch(agent, samples: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    lanes = agent.context.lanes
    space = agent.context.action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = torch.randint(0, int(space.n), (lanes, samples), generator=g)
    else:
        actions = torch.randn(lanes, samples, *space.shape, generator=g)
    # Old log-probabilities far from the new ones, so that the clip range matters.
    return Batch(
        obs=torch.randn(lanes, samples, OBS, generator=g),
        actions=actions,
        values=torch.randn(lanes, samples, generator=g),
        log_probs=torch.randn(lanes, samples, generator=g) * 0.5 - 1.0,
        advantages=torch.randn(lanes, samples, generator=g),
        returns=torch.randn(lanes, samples, generator=g),
    )


def lane_batch(batch: Batch, lane: int) -> Batch:
    """Lane ``lane``'s samples, without the lane dimension (what ``reference_loss`` takes)."""
    return Batch(*(None if f is None else f[lane] for f in batch.fields()))


def lane_module(stacked: StackedNetwork, lane: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Lane ``lane`` of ``stacked`` as its own module: ``make()`` (a fresh module of the
    architecture) loaded with the lane's weights."""
    module = make()
    module.load_state_dict(stacked.lane_state_dict(lane))
    return module


class LaneModules:
    """Lane ``lane`` of an actor-critic agent as plain torch: its actor and critic
    ``nn.Module``s and its Gaussian policy's log-std (a leaf tensor ``[dim]``; ``None`` for
    a categorical policy), copies of the agent's weights."""

    def __init__(self, agent, lane: int) -> None:
        kind, param_size = agent.network_kind, agent.dist.param_size
        self.actor = lane_module(agent.actor, lane, lambda: network(kind, OBS, param_size))
        self.critic = lane_module(agent.critic, lane, lambda: network(kind, OBS, 1))
        log_std = getattr(agent.dist, "log_std", None)
        self.log_std = None
        if log_std is not None:
            self.log_std = log_std[lane].detach().clone().requires_grad_()

    def loss(self, agent, batch: Batch, lane: int) -> torch.Tensor:
        """The agent's ``reference_loss`` of lane ``lane``'s samples of ``batch``."""
        c, samples = agent.cfg, lane_batch(batch, lane)
        if isinstance(agent, PPO):
            clip = scheduled(c.clip_range, c.clip_range_schedule, agent.progress_remaining)
            return ppo.reference_loss(self.actor, self.critic, self.log_std, samples, c, clip)
        return a2c.reference_loss(self.actor, self.critic, self.log_std, samples, c)

    def parameters(self) -> list[torch.Tensor]:
        """Every parameter, as SB3's policy holds them (what its optimizer and clip see)."""
        extra = [] if self.log_std is None else [self.log_std]
        return [*self.actor.parameters(), *self.critic.parameters(), *extra]

    def named(self, of: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """``of(p)`` for every parameter ``p``, named as :func:`lane_tensors` names them."""
        named = {f"actor.{k}": of(p) for k, p in self.actor.named_parameters()}
        named |= {f"critic.{k}": of(p) for k, p in self.critic.named_parameters()}
        if self.log_std is not None:
            named["log_std"] = of(self.log_std)
        return named


def lane_tensors(agent, values: torch.Tensor, lane: int) -> dict[str, torch.Tensor]:
    """``values`` (laid out as ``agent.lane_params.flat``: weights, or gradients) as lane
    ``lane``'s own modules' tensors, by parameter name: read through the stacked networks'
    ``lane_state_dict`` (which undoes their layouts) with ``values`` in the weights' place
    for the time it takes."""
    flat = agent.lane_params.flat
    weights = flat.clone()
    with torch.no_grad():
        flat.copy_(values)
        try:
            named = {f"actor.{k}": v for k, v in agent.actor.lane_state_dict(lane).items()}
            named |= {f"critic.{k}": v for k, v in agent.critic.lane_state_dict(lane).items()}
            if hasattr(agent.dist, "log_std"):
                named["log_std"] = agent.dist.log_std[lane].detach().clone()
        finally:
            flat.copy_(weights)
    return named


def assert_all_close(
    got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, rtol: float, atol: float
) -> None:
    """The same names, and each tensor close to the expected one (a failure names it)."""
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        torch.testing.assert_close(
            got[name], want, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


def captured_gradient(agent, batch: Batch) -> torch.Tensor:
    """The gradient the agent's first gradient step computes (the optimizer stopped; the
    agent's max_grad_norm makes the clip a no-op)."""
    seen = []
    agent.optimizer.step = lambda lr: seen.append(agent.lane_params.grad.clone())
    agent.update(batch)
    return seen[0]


def assert_gradient_is_the_reference_gradient(agent, batch: Batch) -> None:
    """The agent's first gradient step's gradient, lane by lane, is autograd's gradient of
    the reference loss on that lane's own modules."""
    lanes = [LaneModules(agent, k) for k in range(agent.context.lanes)]
    got = captured_gradient(agent, batch)
    assert got.abs().sum() > 0
    for k, modules in enumerate(lanes):
        modules.loss(agent, batch, k).backward()
        expected = modules.named(lambda p: p.grad)
        assert_all_close(lane_tensors(agent, got, k), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("network", ["tanh", "relu", "elu", "residual"])
@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))], ids=["discrete", "box"]
)
@pytest.mark.parametrize(
    "options",
    [{}, {"ent_coef": 0.05, "clip_range_vf": 0.3, "normalize_advantage": False}],
    ids=["zoo-cartpole", "entropy-value-clip"],
)
def test_ppo_gradient_is_the_autograd_gradient_of_its_reference_loss(network, space, options):
    c = PPOConfig(num_envs=2, n_steps=40, batch_size=80, n_epochs=1, max_grad_norm=1e30, **options)
    agent = make_agent(PPO, c, space, network)
    # The surrogate's clip cuts some samples' gradients off, the others keep theirs.
    assert_gradient_is_the_reference_gradient(agent, random_batch(agent, 80))


@pytest.mark.parametrize("network", ["tanh", "relu", "elu", "residual"])
@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (1,))], ids=["discrete", "box"]
)
@pytest.mark.parametrize("ent_coef", [0.0, 0.1])
def test_a2c_gradient_is_the_autograd_gradient_of_its_reference_loss(network, space, ent_coef):
    c = A2CConfig(
        num_envs=2,
        n_steps=5,
        ent_coef=ent_coef,
        normalize_advantage=True,
        max_grad_norm=1e30,
    )
    agent = make_agent(A2C, c, space, network)
    assert_gradient_is_the_reference_gradient(agent, random_batch(agent, 10))


def stacked_case(activation: str, rows: int, n_out: int):
    """Three lanes of a 5 -> 32 -> 16 -> ``n_out`` MLP, an input of ``rows`` rows and a
    gradient with respect to the output."""
    torch.manual_seed(0)
    config = MLPConfig(hidden_sizes=[32, 16], activation=activation)
    net = stack_networks([build_mlp(5, n_out, config) for _ in range(3)])
    return net, torch.randn(3, rows, 5), torch.randn(3, rows, n_out)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("rows", [1, 7, 600])
@pytest.mark.parametrize("n_out", [1, 2, 40])
def test_stacked_backprop_is_autograds(activation, rows, n_out):
    """Every layer kind of the stacked fast path (wide, narrow, a value head, one row, the
    in-place tanh and the narrow product from their thresholds on) backpropagates as
    autograd does; an activation without a hand-written gradient (ELU) through autograd."""
    net, x, grad_output = stacked_case(activation, rows, n_out)
    out, saved = net.forward_for_backprop(x)
    torch.testing.assert_close(out, net(x))
    grads = [torch.full_like(p, float("nan")) for p in net.parameters()]
    net.backprop(saved, grad_output, grads)
    expected = torch.autograd.grad((net(x) * grad_output).sum(), list(net.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
@pytest.mark.parametrize("rows", [1, 7, 600])
@pytest.mark.parametrize("n_out", [1, 2, 40])
def test_stacked_backprop_to_input_is_autograds(activation, rows, n_out):
    """The gradient with respect to the input (an actor's loss through a critic): by hand as
    autograd computes it, through autograd for ELU, and no parameter's gradient touched."""
    net, x, grad_output = stacked_case(activation, rows, n_out)
    _, saved = net.forward_for_backprop(x)
    got = net.backprop_to_input(saved, grad_output)
    leaf = x.clone().requires_grad_()
    (want,) = torch.autograd.grad((net(leaf) * grad_output).sum(), leaf)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in net.parameters())
