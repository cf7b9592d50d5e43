"""Evaluation protocol: the greedy policy, on its own environment instance, N episodes.

Episode ``j`` of every evaluation is reset with seed ``base_seed + j``, so the evaluations
along one run (and across agents with the same run seed) face the same start states.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlbench.agent import Agent


def evaluate(
    agent: Agent,
    env: gym.Env,
    *,
    episodes: int,
    base_seed: int,
    device: torch.device,
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """Mean, std, min and max of the greedy policy's return over ``episodes`` episodes."""
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    returns, lengths = [], []
    with torch.inference_mode():
        for j in range(episodes):
            obs, _ = env.reset(seed=base_seed + j)
            total, length, done = 0.0, 0, False
            while not done:
                obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
                action = agent.act(obs_t.unsqueeze(0), greedy=True)[0].cpu().numpy()
                obs, reward, terminated, truncated, _ = env.step(
                    action.item() if discrete else action
                )
                total += float(reward)
                length += 1
                done = (
                    terminated
                    or truncated
                    or (max_episode_steps is not None and length >= max_episode_steps)
                )
            returns.append(total)
            lengths.append(length)
    r = np.asarray(returns)
    return {
        "return_mean": float(r.mean()),
        "return_std": float(r.std()),
        "return_min": float(r.min()),
        "return_max": float(r.max()),
        "length_mean": float(np.mean(lengths)),
        "episodes": episodes,
    }
