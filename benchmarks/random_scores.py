"""Measure the mean return of a uniformly random policy (the ``random`` reference score).

    python benchmarks/random_scores.py CartPole-v1 Acrobot-v1 MountainCar-v0 --episodes 1000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np


def random_return(env_id: str, episodes: int) -> tuple[float, float]:
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("env_ids", nargs="+")
    parser.add_argument("--episodes", type=int, default=1000)
    args = parser.parse_args()
    for env_id in args.env_ids:
        mean, std = random_return(env_id, args.episodes)
        print(f"{env_id}: {mean:.1f} ± {std:.1f} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
