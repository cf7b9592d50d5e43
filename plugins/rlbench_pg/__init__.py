"""rlbench's built-in policy-gradient agents: PPO and A2C.

Both follow Stable-Baselines3 (defaults from RL Zoo's tuned CartPole-v1 settings), act on
``Discrete`` (categorical) and ``Box`` (diagonal Gaussian) action spaces, and train several
seeds at once as lanes like the built-in DQNs.
"""

from __future__ import annotations

from rlbench import AgentSpec, hookimpl
from rlbench_pg.a2c import A2C
from rlbench_pg.ppo import PPO


@hookimpl
def rlbench_register_agents() -> list[AgentSpec]:
    return [AgentSpec(name="ppo", agent=PPO), AgentSpec(name="a2c", agent=A2C)]
