"""rlbench's built-in environment plugin: reference scores for Gymnasium's classic control.

The environments themselves are Gymnasium's; this plugin adds the two returns that reports
normalize with. ``random`` is the mean return of a uniformly random policy, measured with
``python benchmarks/random_scores.py CartPole-v1 Acrobot-v1 MountainCar-v0`` (1000 episodes,
reset seeds 0..999); ``solved`` is Gymnasium's own ``reward_threshold``.
"""

from __future__ import annotations

import functools

import gymnasium as gym

from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

# name: (random-policy return, solved threshold, description)
REFERENCES: dict[str, tuple[float, float, str]] = {
    "CartPole-v1": (22.2, 475.0, "Balance a pole on a cart; +1 per step, 500 steps max."),
    "Acrobot-v1": (-499.1, -100.0, "Swing a two-link arm above a line; -1 per step, 500 max."),
    "MountainCar-v0": (-200.0, -110.0, "Drive an underpowered car up a hill; -1 per step."),
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
