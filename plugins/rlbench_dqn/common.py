"""Kept for compatibility: the names plugins imported from ``rlbench_dqn.common`` before the
DQN family's shared pieces were split by concern. New code imports from the module that
holds a name:

- :mod:`rlbench_dqn.qagent`: the Q-agent base (:class:`QAgent`, per-lane gradient clipping);
- :mod:`rlbench_dqn.replay`: :class:`LaneReplayBuffer` and its :class:`ReplaySample`;
- :mod:`rlbench_dqn.exploration`: the epsilon schedule and epsilon-greedy action choice;
- :mod:`rlbench_dqn.td`: TD targets and losses;
- :mod:`rlbench_dqn.fastpath`: fused Adam without its wrapper (private PyTorch names);
- :mod:`rlbench_dqn.spaces`: action counts and observation sizes of gymnasium spaces.
"""

from __future__ import annotations

from rlbench_dqn.exploration import lane_epsilon_greedy, linear_schedule
from rlbench_dqn.fastpath import FusedAdam, adam
from rlbench_dqn.qagent import QAgent, lane_clip_grad_norm
from rlbench_dqn.replay import LaneReplayBuffer, ReplaySample
from rlbench_dqn.spaces import discrete_actions, flat_size
from rlbench_dqn.td import LossName, lane_td_loss, td_targets

__all__ = [
    "FusedAdam",
    "LaneReplayBuffer",
    "LossName",
    "QAgent",
    "ReplaySample",
    "adam",
    "discrete_actions",
    "flat_size",
    "lane_clip_grad_norm",
    "lane_epsilon_greedy",
    "lane_td_loss",
    "linear_schedule",
    "td_targets",
]
