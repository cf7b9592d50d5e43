"""Per-lane gradient clipping and per-lane optimizer steps, held to plain torch: for every
family that clips (dqn, ppo, a2c), one gradient step of a three-lane agent with clipping
active is, lane by lane, the step a one-lane plain-torch loop takes on that lane's own
modules: the family's ``reference_loss`` through autograd, ``torch.nn.utils.clip_grad_norm_``
and ``torch.optim.Adam`` (dqn: eps 1e-8; ppo: eps 1e-5) or ``torch.optim.RMSprop`` (a2c:
alpha 0.99, eps 1e-5). The clipped gradients and the updated weights are both compared.

Adam's and RMSprop's first step barely depends on the gradient's scale (``g / (|g| + eps)``
and ``g / (0.1 |g| + eps)``), so a clipper that scaled the gradients wrongly (or not at all)
would hardly show in the weights unless the clipped gradients are of the order of ``eps``
(``eps`` for Adam, ``10 eps`` for RMSprop): the ``"to-eps"`` cases clip every lane to there,
where the weights show the clip as much as the gradients do. The ``"some-lanes"`` cases clip
between the lanes' norms, so that some lanes keep their gradients and the others are clipped:
a clip by one norm over all lanes, or one lane's coefficient applied to another, fails there.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import pytest
import torch
from rlbench_dqn.dqn import reference_loss
from rlbench_pg.a2c import A2C, A2CConfig
from rlbench_pg.actor_critic import scheduled
from rlbench_pg.ppo import PPO, PPOConfig
from test_dqn_gradients import lane_q_networks, lane_sample, lane_state, make_dqn, record_phase
from test_pg_gradients import LaneModules, assert_all_close, lane_tensors, make_agent, random_batch

LANES = 3

#: A max_grad_norm that clips every lane's gradient to elements of the order of the
#: optimizer's eps (a few hundred parameters: elements about max_grad_norm / 25).
TO_EPS = {"dqn": 3e-7, "ppo": 2e-4, "a2c": 2e-3}


def between_lane_norms(norms: list[float]) -> float:
    """A max_grad_norm in the widest gap between the lanes' gradient norms: the lanes below
    it are not clipped, those above are."""
    ordered = sorted(norms)
    low, high = max(itertools.pairwise(ordered), key=lambda pair: pair[1] / pair[0])
    assert high > 1.2 * low, "the lanes' norms are too close to tell apart"
    return (low + high) / 2


def assert_clipped_lanes(clipped: list[bool], regime: str) -> None:
    """Every lane clipped ("to-eps"), or some and not others ("some-lanes")."""
    if regime == "to-eps":
        assert all(clipped)
    else:
        assert any(clipped) and not all(clipped)


@pytest.mark.parametrize("regime", ["to-eps", "some-lanes"])
@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_dqn_step_is_torchs_clipped_adam_step_of_each_lane(regime, loss):
    config = {"batch_size": 64, "gradient_steps": 1, "loss": loss}
    if regime == "to-eps":
        max_grad_norm = TO_EPS["dqn"]
    else:  # the lanes' norms, from a first agent (the same weights and replay)
        steps, _ = record_phase(make_dqn(lanes=LANES, max_grad_norm=1e30, **config))
        max_grad_norm = between_lane_norms(
            torch.linalg.vector_norm(steps[0]["grad"], dim=1).tolist()
        )
    agent = make_dqn(lanes=LANES, max_grad_norm=max_grad_norm, **config)
    (step,), _ = record_phase(agent)
    c = agent.config
    clipped_lanes = []
    for k in range(LANES):
        # Lane k alone, in plain torch, from the weights the agent's step started from.
        online, target = lane_q_networks(agent, step, k)
        optimizer = torch.optim.Adam(online.parameters(), lr=c.learning_rate)
        reference_loss(online, target, lane_sample(step["batch"], k), c.gamma, c.loss).backward()
        norm = torch.nn.utils.clip_grad_norm_(online.parameters(), max_grad_norm)
        clipped_lanes.append(bool(norm > max_grad_norm))
        clipped = {name: p.grad for name, p in online.named_parameters()}
        got = lane_state(agent.q, agent.q_params, step["clipped"], k)
        assert_all_close(got, clipped, rtol=1e-4, atol=1e-5 * max_grad_norm)
        optimizer.step()
        assert_all_close(agent.q.lane_state_dict(k), online.state_dict(), rtol=1e-5, atol=1e-6)
    assert_clipped_lanes(clipped_lanes, regime)


def pg_agent(family: str, space: gym.Space, max_grad_norm: float):
    """A three-lane ppo or a2c agent (tanh MLPs 16-8) whose update is one gradient step."""
    if family == "ppo":
        config = PPOConfig(
            num_envs=2, n_steps=40, batch_size=80, n_epochs=1, max_grad_norm=max_grad_norm
        )
        return make_agent(PPO, config, space, "tanh", lanes=LANES)
    config = A2CConfig(num_envs=2, n_steps=5, max_grad_norm=max_grad_norm)
    return make_agent(A2C, config, space, "tanh", lanes=LANES)


def lane_norms(family: str, space: gym.Space) -> list[float]:
    """Each lane's gradient norm at the first step, from the reference loss."""
    agent = pg_agent(family, space, 1e30)
    batch = random_batch(agent, agent.cfg.num_envs * agent.cfg.n_steps)
    norms = []
    for k in range(LANES):
        modules = LaneModules(agent, k)
        modules.loss(agent, batch, k).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(modules.parameters(), 1e30).item())
    return norms


@pytest.mark.parametrize("regime", ["to-eps", "some-lanes"])
@pytest.mark.parametrize(
    "space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))], ids=["discrete", "box"]
)
@pytest.mark.parametrize("family", ["ppo", "a2c"])
def test_pg_step_is_torchs_clipped_step_of_each_lane(family, space, regime):
    if regime == "to-eps":
        max_grad_norm = TO_EPS[family]
    else:
        max_grad_norm = between_lane_norms(lane_norms(family, space))
    agent = pg_agent(family, space, max_grad_norm)
    c = agent.cfg
    batch = random_batch(agent, c.num_envs * c.n_steps)
    lr = scheduled(c.learning_rate, c.learning_rate_schedule, agent.progress_remaining)
    lanes = [LaneModules(agent, k) for k in range(LANES)]  # the weights before the step
    seen = []
    step = agent.optimizer.step

    def recording_step(lr: float) -> None:
        seen.append(agent.lane_params.grad.clone())  # clipped, as the optimizer gets it
        step(lr)

    agent.optimizer.step = recording_step
    agent.update(batch)
    assert len(seen) == 1
    clipped_lanes = []
    for k, modules in enumerate(lanes):
        # Lane k alone, in plain torch: Stable-Baselines3's zero_grad, backward, clip, step.
        params = modules.parameters()
        if family == "ppo":
            optimizer = torch.optim.Adam(params, lr=lr, eps=1e-5)
        else:
            optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-5)
        modules.loss(agent, batch, k).backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        clipped_lanes.append(bool(norm > max_grad_norm))
        clipped = modules.named(lambda p: p.grad)
        assert_all_close(
            lane_tensors(agent, seen[0], k), clipped, rtol=1e-4, atol=1e-5 * max_grad_norm
        )
        optimizer.step()
        weights = modules.named(lambda p: p.detach())
        assert_all_close(
            lane_tensors(agent, agent.lane_params.flat, k), weights, rtol=1e-5, atol=1e-6
        )
    assert_clipped_lanes(clipped_lanes, regime)
