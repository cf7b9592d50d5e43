"""Evaluation protocol: the greedy policy, on its own environment instance, N episodes.

Episode ``j`` of every evaluation is reset with seed ``base_seed + j``, so the evaluations
along one run (and across agents with the same run seed) face the same start states.
Actions reach the environment as in training (:func:`rlbench.stepping.env_actions`: a ``Box``
action clipped to the space's bounds).

Lanes (see :mod:`rlbench.lanes`) are evaluated in lockstep: episode ``j`` of every lane runs
at the same time, one batched ``act`` per step, each lane on its own environment and base
seed; a lane whose episode has ended waits (its actions are computed and ignored) until the
others' have. Each lane's result is what evaluating it alone gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from rlbench.agent import Agent, OneLane
from rlbench.stepping import env_actions


class _Acts(Protocol):
    def act(self, obs: torch.Tensor, *, greedy: bool = False) -> torch.Tensor: ...


def evaluate(
    agent: Agent,
    env: gym.Env,
    *,
    episodes: int,
    base_seed: int,
    device: torch.device,
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """Mean, std, min and max of the greedy policy's return over ``episodes`` episodes, for
    an agent whose :meth:`~rlbench.agent.Agent.act` takes ``[n, *obs_shape]``.

    The harness evaluates lanes (:func:`evaluate_lanes`); this is the protocol for one policy
    from outside a run, e.g. another library's trained model scored exactly as rlbench scores
    its own (``benchmarks/sb3_vs_rlbench.py``)."""
    return evaluate_lanes(
        OneLane(agent),
        [env],
        episodes=episodes,
        base_seeds=[base_seed],
        device=device,
        max_episode_steps=max_episode_steps,
    )[0]


def evaluate_lanes(
    agent: _Acts,
    envs: Sequence[gym.Env],
    *,
    episodes: int,
    base_seeds: Sequence[int],
    device: torch.device,
    max_episode_steps: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate` of every lane of a lane-shaped ``agent`` (``act`` takes
    ``[lanes, 1, *obs_shape]``): lane ``k`` plays on ``envs[k]`` with base seed
    ``base_seeds[k]``. Returns one result per lane."""
    lanes = len(envs)
    to_env = env_actions(envs[0].action_space)
    returns = np.zeros((lanes, episodes))
    lengths = np.zeros((lanes, episodes), dtype=np.int64)
    with torch.inference_mode():
        for j in range(episodes):
            first = [
                np.asarray(env.reset(seed=base + j)[0])
                for env, base in zip(envs, base_seeds, strict=True)
            ]
            obs = np.stack(first).astype(np.float32, copy=False)
            total = [0.0] * lanes
            length = [0] * lanes
            playing = list(range(lanes))
            while playing:
                obs_t = torch.as_tensor(obs, device=device).unsqueeze(1)
                sent = to_env(agent.act(obs_t, greedy=True)[:, :1].cpu().numpy())
                still = []
                for k in playing:
                    o, reward, terminated, truncated, _ = envs[k].step(sent[k][0])
                    obs[k] = o
                    total[k] += float(reward)
                    length[k] += 1
                    done = (
                        terminated
                        or truncated
                        or (max_episode_steps is not None and length[k] >= max_episode_steps)
                    )
                    if not done:
                        still.append(k)
                playing = still
            returns[:, j] = total
            lengths[:, j] = length
    return [
        {
            "return_mean": float(returns[k].mean()),
            "return_std": float(returns[k].std()),
            "return_min": float(returns[k].min()),
            "return_max": float(returns[k].max()),
            "length_mean": float(lengths[k].mean()),
            "episodes": episodes,
        }
        for k in range(lanes)
    ]
