"""Default search spaces of the DQN family for ``rlbench tune`` (the ``rlbench_search_space``
hook). The format is a suite's ``[tune.space.<label>]`` (docs/tuning.md); a suite overrides
any key, or fixes it with a plain value.

Ranges are sized for CartPole-scale budgets (tens of thousands of environment steps), after
RL Zoo's DQN sampler, narrowed where its values make no sense at that scale (a target
update every 20,000 steps, a million-transition buffer).
"""

from __future__ import annotations

from typing import Any

LEARNING_RATE = {"low": 1e-5, "high": 1e-2, "log": True}
GAMMA = {"choices": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]}
EPSILON_SCHEDULE = {
    "epsilon_end": {"low": 0.0, "high": 0.2},
    "exploration_fraction": {"low": 0.05, "high": 0.5},
}

SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "naive_dqn": {
        "learning_rate": LEARNING_RATE,
        "gamma": GAMMA,
        "loss": {"choices": ["mse", "huber"]},
        **EPSILON_SCHEDULE,
    },
    "target_dqn": {
        "learning_rate": LEARNING_RATE,
        "gamma": GAMMA,
        "target_update_interval": {"choices": [1, 10, 100, 500, 1000, 5000]},
        "loss": {"choices": ["mse", "huber"]},
        **EPSILON_SCHEDULE,
    },
    "replay_dqn": {
        "learning_rate": LEARNING_RATE,
        "gamma": GAMMA,
        "batch_size": {"choices": [16, 32, 64, 128, 256]},
        "buffer_size": {"choices": [1_000, 10_000, 50_000, 100_000]},
        # The post's per-episode schedule: epsilon_start, times epsilon_decay per episode.
        "epsilon_start": {"low": 0.05, "high": 1.0},
        "epsilon_decay": {"low": 0.9, "high": 0.999},
        "epsilon_min": {"low": 0.0, "high": 0.1},
    },
    "dqn": {
        "learning_rate": LEARNING_RATE,
        "gamma": GAMMA,
        "batch_size": {"choices": [16, 32, 64, 128, 256]},
        "buffer_size": {"choices": [10_000, 50_000, 100_000]},
        "learning_starts": {"choices": [0, 1_000, 5_000]},
        # Sampled independently, so kept to at most 2 gradient steps per environment step
        # (the default is 128 every 256): a trial's cost must not explode.
        "train_frequency": {"choices": [64, 128, 256, 512]},
        "gradient_steps": {"choices": [16, 32, 64, 128]},
        "target_update_interval": {"choices": [1, 10, 100, 1_000, 5_000]},
        **EPSILON_SCHEDULE,
    },
}


def search_space(agent_name: str) -> dict[str, Any] | None:
    """A fresh copy of ``agent_name``'s default space, or ``None`` for other agents."""
    space = SEARCH_SPACES.get(agent_name)
    return None if space is None else {k: dict(v) for k, v in space.items()}
