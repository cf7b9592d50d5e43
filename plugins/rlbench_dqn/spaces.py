"""What the Q agents need to know about gymnasium spaces: how many discrete actions."""

from __future__ import annotations

import gymnasium as gym


def discrete_actions(agent_name: str, space: gym.Space) -> int:
    """Number of actions, or a clear error for a continuous action space."""
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"{agent_name} needs a discrete action space (gymnasium.spaces.Discrete), "
            f"got {space}; choose an environment with discrete actions"
        )
    return int(space.n)
