"""target_dqn: online DQN whose TD targets come from a periodically synced target network.

From the post "Deep Q-learning with PyTorch" (second seed post).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field

from rlbench import AgentConfig, AgentContext, Transition
from rlbench_dqn.qagent import QAgent
from rlbench_dqn.td import LossName, lane_td_loss, td_targets


class TargetDQNConfig(AgentConfig):
    learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate (post: 0.001)."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor (the post leaves it unset; 0.99 as in the other posts)."""
    target_update_interval: int = Field(500, ge=1)
    """Environment steps between copies of the online weights into the target network."""
    loss: LossName = "mse"
    """TD loss: "mse" (post) or "huber" (smooth L1)."""
    epsilon_start: float = Field(1.0, ge=0, le=1)
    """Exploration rate at step 0. The post acts greedily: set both epsilons to 0 for that."""
    epsilon_end: float = Field(0.05, ge=0, le=1)
    """Exploration rate after the decay."""
    exploration_fraction: float = Field(0.1, ge=0, le=1)
    """Fraction of the training budget over which epsilon decays linearly."""


class TargetDQN(QAgent):
    """Online DQN with a target network: one gradient step per transition, targets from a
    frozen copy of the network that is synced every ``target_update_interval`` steps.

    Faithful to the post: an MLP 64-64, Adam at lr 1e-3, MSE loss, target network
    initialised as a copy of the online network and synced by copying its weights.

    Deviations, each a bug in the post or a gap it leaves:

    * Termination vs truncation. The post never stops bootstrapping, not even at a terminal
      state (its target is ``reward + gamma * max Q_target(s')`` whatever ``done`` is). Here
      the target drops the bootstrap term at termination and keeps it at truncation.
    * Gradient through the target. The post builds its target with ``q_values.clone()``,
      which stays attached to the graph. Targets here are computed under ``no_grad``.
    * Loss on the taken action. The post's MSE runs over all actions' Q-values, the others
      set equal to themselves; that is the taken action's squared error divided by the number
      of actions, i.e. a learning rate ``|A|`` times smaller. Here the loss is the taken
      action's error alone (standard Q-learning), at the post's learning rate.
    * Sync interval in steps. The post syncs every ``target_update`` episodes (value unset);
      syncing by environment steps makes the interval independent of episode length.
    * Exploration. The post acts purely greedily; epsilon-greedy decays here from
      ``epsilon_start`` to ``epsilon_end``; set both to 0 for the post's behaviour.
    """

    Config: ClassVar[type[AgentConfig]] = TargetDQNConfig
    default_network: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_sizes": [64, 64]}

    name: ClassVar[str] = "target_dqn"

    def __init__(self, config: TargetDQNConfig, context: AgentContext) -> None:
        super().__init__(config, context, target_network=True)
        self.cfg = config

    def observe(self, t: Transition) -> Mapping[str, Any]:
        q_taken = self.q_taken(t.obs, t.action)
        with torch.no_grad():
            assert self.q_target is not None
            next_q_max = self.q_target(t.next_obs.flatten(2)).max(dim=-1).values
            target = td_targets(t.reward, next_q_max, t.terminated, self.cfg.gamma)
        loss = lane_td_loss(q_taken, target, self.cfg.loss)
        self.gradient_step(loss)
        self.count_steps(t, sync_every=self.cfg.target_update_interval)
        return self.metrics(loss)
