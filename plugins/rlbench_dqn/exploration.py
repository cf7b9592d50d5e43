"""Exploration: the linear epsilon schedule and epsilon-greedy action choice of every lane.

Each lane explores with its own random stream (``context.lane_rngs[k]``), drawing exactly what
a one-lane agent of that seed draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """``start`` at step 0, moving linearly to ``end`` at ``duration`` steps, then ``end``."""
    if step >= duration:
        return end
    return start + (end - start) * step / duration


def lane_epsilon_greedy(
    q_values: torch.Tensor,
    epsilon: float | Sequence[float],
    rngs: Sequence[np.random.Generator],
) -> torch.Tensor:
    """Greedy actions of every lane (``q_values`` is ``[lanes, n, actions]``), each replaced
    by a uniformly random one with probability epsilon (one for all lanes, or one per lane).

    Lane ``k`` draws from ``rngs[k]`` only, and only when its epsilon is above 0, so a greedy
    agent's random stream is untouched (and ``epsilon = 0`` reproduces a post's greedy
    behaviour exactly). With one environment a lane draws two scalars (``random()``, then
    ``integers(actions)`` if it explores), several microseconds cheaper than arrays; with
    ``n`` it draws ``random(n)``, then ``integers(actions, size=n)`` if any explores.
    """
    actions = q_values.argmax(dim=-1)
    lanes, n, num_actions = q_values.shape
    epsilons = [float(epsilon)] * lanes if isinstance(epsilon, (int, float)) else list(epsilon)
    if max(epsilons) <= 0.0:
        return actions
    cpu = actions.device.type == "cpu"
    # On the CPU, written in place through numpy (the tensor shares this memory): cheaper
    # than torch.where on converted arrays.
    chosen = actions.numpy() if cpu else np.zeros((lanes, n), dtype=np.int64)
    explore = None if cpu else np.zeros((lanes, n), dtype=bool)
    for k, (rng, eps) in enumerate(zip(rngs, epsilons, strict=True)):
        if eps <= 0.0:
            continue
        if n == 1:
            if rng.random() < eps:
                chosen[k, 0] = rng.integers(num_actions)
                if explore is not None:
                    explore[k, 0] = True
            continue
        lane_explore = rng.random(n) < eps
        if lane_explore.any():
            np.copyto(chosen[k], rng.integers(num_actions, size=n), where=lane_explore)
            if explore is not None:
                explore[k] = lane_explore
    if cpu:
        return actions
    return torch.where(
        torch.as_tensor(explore, device=actions.device),
        torch.as_tensor(chosen, device=actions.device),
        actions,
    )
