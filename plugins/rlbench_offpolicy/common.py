"""What sac and td3 share: the action contract for bounded ``Box`` actions, each lane's random
draws, the replay buffer's size, and the twin critics' gradient by hand.

**The action contract.** The networks work in ``[-1, 1]`` (a tanh squashes the actor's output
there). :meth:`BoxActions.to_env` rescales an action to the Box's bounds,
``low + (a + 1) / 2 * (high - low)`` (Stable-Baselines3's ``unscale_action``), and that is what
:meth:`~rlbench.agent.Agent.act` returns and the environment receives; the replay buffer
stores the ``[-1, 1]`` action the agent chose (SB3's ``buffer_action``), never the rescaled
one, so the critics learn ``Q(s, a)`` on the actor's scale. Exploration noise is added, and
clipped to ``[-1, 1]``, on that scale too: ``exploration_noise = 0.1`` is a tenth of half the
action range, whatever the bounds. The harness clips a ``Box`` action to the bounds before
``env.step`` (:func:`rlbench.stepping.env_actions`); these agents' actions are within them
already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlbench import AgentContext, Transition
from rlbench.lanes import LaneParameters, StackedNetwork, flat_size


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> str | None:
    """Why sac or td3 cannot train on these spaces (``None``: they can): both need ``Box``
    observations and ``Box`` actions with finite bounds (the tanh actor covers ``[-1, 1]``,
    rescaled to the bounds)."""
    if not isinstance(observation_space, gym.spaces.Box):
        return f"it needs Box observations, got {observation_space}"
    if not isinstance(action_space, gym.spaces.Box):
        return f"it needs a Box action space (continuous actions), got {action_space}"
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        return f"it needs a Box action space with finite bounds, got {action_space}"
    return None


class BoxActions:
    """Rescaling between the networks' ``[-1, 1]`` and a ``Box``'s bounds (the action
    contract above). ``size`` is the number of action dimensions the networks see."""

    def __init__(self, space: gym.spaces.Box, device: torch.device) -> None:
        self.shape = tuple(space.shape)
        self.size = flat_size(space)
        self.low, self.high = (
            torch.as_tensor(bound, dtype=torch.float32, device=device).flatten()
            for bound in (space.low, space.high)
        )

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """``[lanes, n, size]`` in ``[-1, 1]`` to the bounds, ``[lanes, n, *shape]``: SB3's
        ``low + 0.5 * (a + 1) * (high - low)``, clamped so that rounding never steps out."""
        scaled = self.low + 0.5 * (action + 1.0) * (self.high - self.low)
        scaled = torch.minimum(torch.maximum(scaled, self.low), self.high)
        return scaled.reshape(*action.shape[:2], *self.shape)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """The inverse: actions ``[lanes, n, *shape]`` within the bounds to ``[lanes, n,
        size]`` in ``[-1, 1]`` (SB3's ``scale_action``)."""
        flat = action.flatten(2).float()
        return (2.0 * (flat - self.low) / (self.high - self.low) - 1.0).clamp(-1.0, 1.0)


def lane_normal(
    rngs: Sequence[np.random.Generator], shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Standard normal draws ``[lanes, *shape]`` (float32), lane ``k``'s from ``rngs[k]``
    alone: what a one-lane agent of that seed draws, whatever the group."""
    draws = np.stack([rng.standard_normal(shape, dtype=np.float32) for rng in rngs])
    return torch.from_numpy(draws).to(device)


def lane_uniform(
    rngs: Sequence[np.random.Generator], shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Uniform draws in ``[-1, 1)`` ``[lanes, *shape]`` (float32), lane ``k``'s from
    ``rngs[k]`` alone: the warm-up's random actions, on the networks' scale (SB3 samples the
    Box uniformly and scales the sample to ``[-1, 1]``: the same distribution)."""
    draws = np.stack([rng.uniform(-1.0, 1.0, size=shape) for rng in rngs]).astype(np.float32)
    return torch.from_numpy(draws).to(device)


def replay_capacity(buffer_size: int, context: AgentContext) -> int:
    """Transitions each lane's replay buffer preallocates: ``buffer_size``, but never more
    than the run can add (its budget, plus one harness step of overshoot). A buffer that
    never fills behaves the same whatever its capacity (nothing is overwritten, and samples
    are drawn among the transitions held), so this changes no result, and SB3's default of a
    million transitions costs only what a run uses: Pendulum-v1's 20,000 steps take 0.7 MB
    per lane instead of 33 MB, a MuJoCo task of 17 observations and 6 actions at a million
    steps 165 MB per lane (16 lanes: 2.6 GB; lower ``buffer_size`` or ``--lanes`` there)."""
    return max(1, min(buffer_size, context.total_steps + context.num_envs))


def check_gradient_steps(value: int) -> int:
    """``gradient_steps``: at least 1, or -1 (as many as environment steps since the last
    training, Stable-Baselines3's -1)."""
    if value != -1 and value < 1:
        raise ValueError(
            "must be at least 1, or -1 for as many as the environment steps collected since "
            f"the previous training (got {value})"
        )
    return value


def record_step(agent: Any, t: Transition) -> int:
    """What SAC and TD3 do with each step before learning from it: store ``t`` in
    ``agent.buffer`` with the ``[-1, 1]`` action ``act()`` chose (``agent._acted``; the
    rescaled one reached the environment), count the environment steps (``agent.steps``) and
    the harness's vectorized steps (``agent.harness_steps``), and return how many gradient
    steps to take now: SB3's schedule, ``gradient_steps`` (``train_freq × num_envs`` for -1)
    after every ``train_freq`` vectorized steps once past ``learning_starts``, else 0."""
    c = agent.config
    if agent._acted is not None and agent._acted[0] is t.action:
        unit = agent._acted[1]
    else:  # actions act() did not return (a test's): scale them back
        unit = agent.actions.to_unit(t.action)
    agent._acted = None
    agent.buffer.add(dataclasses.replace(t, action=unit))
    n = t.obs.shape[1]
    agent.steps += n
    agent.harness_steps += 1
    if agent.harness_steps % c.train_freq != 0 or agent.steps <= c.learning_starts:
        return 0
    return c.gradient_steps if c.gradient_steps > 0 else c.train_freq * n


def backprop_twin_critics(
    qf1: StackedNetwork,
    qf2: StackedNetwork,
    params: LaneParameters,
    x: torch.Tensor,
    target: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    coefficient: float,
) -> torch.Tensor:
    """The twin critics' loss and its gradient, without autograd: ``loss(q1, q2, target)``
    per lane (``[lanes]``), ``q_i = Q_i(x)`` ``[lanes, batch]``, where ``loss`` is the agent's
    plain form, ``coefficient * (mean((q1 - target)^2) + mean((q2 - target)^2))``; its
    gradient goes into ``params.grad`` (``qf1``'s parameters, then ``qf2``'s).

    The loss's derivative with respect to ``q_i`` is ``2 * (q_i - target) * (coefficient /
    batch)``, and each critic backpropagates it by hand
    (:meth:`~rlbench.lanes.StackedNetwork.backprop`). Computed in autograd's order (the
    mean's ``coefficient / batch`` first, rounded once, times ``2 * (q_i - target)``, which
    is exact), it equals autograd's gradient of ``loss`` bit for bit
    (``tests/test_offpolicy.py`` holds it to that). It saves autograd's graph and its
    gradient accumulation: 13% of a critic update of 256-256 networks on one lane."""
    with torch.no_grad():
        q1, saved1 = qf1.forward_for_backprop(x)
        q2, saved2 = qf2.forward_for_backprop(x)
        q1, q2 = q1.squeeze(-1), q2.squeeze(-1)
        value = loss(q1, q2, target)
        scale = torch.full((), coefficient, dtype=target.dtype, device=target.device)
        scale = scale / target.shape[1]
        grads = params.grad_views
        first = len(list(qf1.parameters()))
        for network, q, saved, network_grads in (
            (qf1, q1, saved1, grads[:first]),
            (qf2, q2, saved2, grads[first:]),
        ):
            grad_q = (q - target).mul_(2.0).mul_(scale).unsqueeze(-1)
            network.backprop(saved, grad_q, network_grads)
    return value
