"""target_dqn: online DQN whose TD targets come from a periodically synced target network.

From the post "Deep Q-learning with PyTorch" (second seed post).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field

from rlbench import AgentConfig, AgentContext, Transition
from rlbench_dqn.config import Discount, Fraction, LearningRate, LinearEpsilonConfig
from rlbench_dqn.qagent import QAgent
from rlbench_dqn.td import LossName, lane_td_loss, td_targets


class TargetDQNConfig(LinearEpsilonConfig):
    """target_dqn's hyperparameters (``epsilon_end`` and ``exploration_fraction`` keep
    :class:`~rlbench_dqn.config.LinearEpsilonConfig`'s defaults)."""

    learning_rate: LearningRate = 1e-3
    """Adam learning rate (post: 0.001)."""
    gamma: Discount = 0.99
    """Discount factor (the post leaves it unset; 0.99 as in the other posts)."""
    loss: LossName = "mse"
    """TD loss: "mse" (post) or "huber" (smooth L1)."""
    epsilon_start: Fraction = 1.0
    """Exploration rate at step 0. The post acts greedily: set both epsilons to 0 for that."""
    target_update_interval: int = Field(500, ge=1)
    """Environment steps between copies of the online weights into the target network."""


class TargetDQN(QAgent[TargetDQNConfig]):
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

    def exploration(self) -> list[float]:
        """The linear schedule's epsilon, the same for every lane (they step in lockstep)."""
        return [self.config.epsilon_at(self.steps, self.context.total_steps)] * self.lanes

    def observe(self, t: Transition) -> Mapping[str, Any]:
        q_taken = self.q_taken(t.obs, t.action)
        with torch.no_grad():
            assert self.q_target is not None
            next_q_max = self.q_target(t.next_obs.flatten(2)).max(dim=-1).values
            target = td_targets(t.reward, next_q_max, t.terminated, self.config.gamma)
        loss = lane_td_loss(q_taken, target, self.config.loss)
        self.gradient_step(loss)
        self.count_steps(t, sync_every=self.config.target_update_interval)
        return self.metrics(loss)
