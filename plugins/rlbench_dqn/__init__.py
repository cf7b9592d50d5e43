"""rlbench's built-in agent plugin: the DQN family.

``naive_dqn``, ``target_dqn`` and ``replay_dqn`` follow three blog posts (each documents
where and why it deviates from its post); ``dqn`` is the standard combination they are
measured against.
"""

from __future__ import annotations

from typing import Any

from rlbench import AgentSpec, hookimpl
from rlbench_dqn.dqn import DQN
from rlbench_dqn.naive_dqn import NaiveDQN
from rlbench_dqn.replay_dqn import ReplayDQN
from rlbench_dqn.search_spaces import search_space
from rlbench_dqn.target_dqn import TargetDQN


@hookimpl
def rlbench_register_agents() -> list[AgentSpec]:
    return [
        AgentSpec(name="naive_dqn", agent=NaiveDQN),
        AgentSpec(name="target_dqn", agent=TargetDQN),
        AgentSpec(name="replay_dqn", agent=ReplayDQN),
        AgentSpec(name="dqn", agent=DQN),
    ]


@hookimpl
def rlbench_search_space(agent_name: str) -> dict[str, Any] | None:
    return search_space(agent_name)
