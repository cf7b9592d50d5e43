"""rlbench's built-in environment plugin: reference scores for Gymnasium's classic control.

The environments themselves are Gymnasium's; this plugin adds the two returns that reports
normalize with. ``random`` is the mean return of a uniformly random policy, measured with
``python benchmarks/random_scores.py CartPole-v1 Acrobot-v1 MountainCar-v0 Pendulum-v1
MountainCarContinuous-v0`` (1000 episodes, reset seeds 0..999, action-space seed 0; each
mean ± std is beside its entry). ``solved`` is Gymnasium's own ``reward_threshold`` (the
registry's spec) where it sets one; Pendulum-v1 has none, so its ``solved`` is RL Zoo's
published score for PPO (rl-baselines3-zoo ``benchmark.md``).
"""

from __future__ import annotations

import functools

import gymnasium as gym

from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

# name: (random-policy return, solved threshold, description)
REFERENCES: dict[str, tuple[float, float, str]] = {
    # random 22.2 ± 11.3; solved: reward_threshold
    "CartPole-v1": (22.2, 475.0, "Balance a pole on a cart; +1 per step, 500 steps max."),
    # random -499.1 ± 9.7; solved: reward_threshold
    "Acrobot-v1": (-499.1, -100.0, "Swing a two-link arm above a line; -1 per step, 500 max."),
    # random -200.0 ± 0.0 (a random car never reaches the flag); solved: reward_threshold
    "MountainCar-v0": (-200.0, -110.0, "Drive an underpowered car up a hill; -1 per step."),
    # random -1230.7 ± 286.6; no reward_threshold: RL Zoo benchmark.md, ppo Pendulum-v1,
    # -172.225 ± 104.159 after 100k steps (the Zoo's tuned PPO, deterministic policy)
    "Pendulum-v1": (
        -1230.7,
        -172.225,
        "Swing a pendulum up and hold it upright; continuous torque, 200 steps.",
    ),
    # random -33.3 ± 0.9 (the action cost, never the goal's +100); solved: reward_threshold
    "MountainCarContinuous-v0": (
        -33.3,
        90.0,
        "Drive an underpowered car up a hill; continuous force, +100 at the flag.",
    ),
}


@hookimpl
def rlbench_register_environments() -> list[EnvironmentSpec]:
    return [
        EnvironmentSpec(
            name=name,
            make=functools.partial(gym.make, name),
            reference=ReferenceScores(random=random, solved=solved),
            description=description,
        )
        for name, (random, solved, description) in REFERENCES.items()
    ]
